"""Atomic writes and the trainer's resumable state (optimizer, scheduler, RNG, counters).

Nothing here pickles: tensors go to safetensors, everything else to JSON. Every file is
written to a temporary name in the same folder and moved into place with ``os.replace``,
so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then move ``tmp_path`` onto ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_weights(model: torch.nn.Module, path: Path, *, metadata: dict[str, str] | None = None) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata or {}))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights, naming missing, unexpected or mis-shaped tensors."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    tensors = load_file(str(path))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{name}: file {tuple(tensors[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(tensors))
        if tensors[name].shape != expected[name].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:5]}")
        raise ValueError(f"{path}: weights do not fit the configured model: {'; '.join(parts)}")
    model.load_state_dict(tensors)


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], payload: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, entries in payload["scalars"].items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": payload["param_groups"]}


def save_trainer_state(
    run_dir: Path,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
    counters: dict[str, Any],
) -> None:
    """Everything besides the weights that resuming needs, in two files."""
    tensors, optimizer_payload = _optimizer_to_files(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = cuda_state
    payload = {
        "format_version": FORMAT_VERSION,
        "counters": counters,
        "optimizer": optimizer_payload,
        "scheduler": scheduler.state_dict(),
        "rng_python": random.getstate(),
    }
    atomic_write(run_dir / "trainer_state.safetensors", lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_text(run_dir / "trainer_state.json", json.dumps(payload))


def load_trainer_state(
    run_dir: Path,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG state; return the counters (epoch, step, ...)."""
    json_path, tensor_path = run_dir / "trainer_state.json", run_dir / "trainer_state.safetensors"
    for path in (json_path, tensor_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; this run cannot be resumed (was it trained to the end of an epoch?)")
    try:
        payload = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{json_path}:{error.lineno}: malformed trainer state: {error.msg}") from None
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{json_path}: format_version {payload.get('format_version')!r}, expected {FORMAT_VERSION}")
    tensors = load_file(str(tensor_path))
    optimizer.load_state_dict(_optimizer_from_files(tensors, payload["optimizer"]))
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    version, internal, gauss = payload["rng_python"]
    random.setstate((version, tuple(internal), gauss))
    return payload["counters"]
