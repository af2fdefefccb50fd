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
from safetensors import safe_open
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import: os.umask can only be read by setting it


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then move ``tmp_path`` onto ``path`` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


MODEL_PREFIX = "model."


def save_weights(model: torch.nn.Module, path: Path, *, metadata: dict[str, str] | None = None) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata or {}))


def _model_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Model tensors of a weights file or of a full training checkpoint (``model.*`` keys)."""
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
    if any(key.startswith(MODEL_PREFIX) for key in tensors):
        return {key[len(MODEL_PREFIX) :]: t for key, t in tensors.items() if key.startswith(MODEL_PREFIX)}
    return tensors


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights, naming missing, unexpected or mis-shaped tensors."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    tensors = _model_tensors(path)
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


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
    counters: dict[str, Any],
) -> None:
    """Weights, optimizer, scheduler, RNG state and counters in ONE safetensors file.

    One file and one ``os.replace`` means a crash can never leave weights of one epoch
    beside an optimizer state of another. Tensors are stored under ``model.*``,
    ``optimizer.*`` and ``rng.*``; everything else is JSON in the file's metadata.
    """
    tensors = {MODEL_PREFIX + name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    optimizer_tensors, optimizer_payload = _optimizer_to_files(optimizer)
    tensors.update(optimizer_tensors)
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
    metadata = {"trainer_state": json.dumps(payload), "epoch": str(counters.get("epoch"))}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote; return the counters (epoch, step, ...)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; this run cannot be resumed (no epoch has finished yet)")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "trainer_state" not in metadata:
        raise ValueError(f"{path}: holds weights only, not a training checkpoint; it cannot be resumed")
    try:
        payload = json.loads(metadata["trainer_state"])
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: malformed trainer state in the metadata: {error.msg}") from None
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {payload.get('format_version')!r}, expected {FORMAT_VERSION}")
    load_weights(model, path)
    tensors = load_file(str(path))
    optimizer.load_state_dict(_optimizer_from_files(tensors, payload["optimizer"]))
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    version, internal, gauss = payload["rng_python"]
    random.setstate((version, tuple(internal), gauss))
    return payload["counters"]
