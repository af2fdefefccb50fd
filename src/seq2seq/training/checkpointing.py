"""Atomic writes and the trainer's resumable state (optimizer, scheduler, RNG, counters).

Nothing here pickles: tensors go to safetensors, everything else to JSON. Every file is
written to a temporary name in the same folder and moved into place with ``os.replace``,
so a crash leaves either the old file or the new one, never half of one.

Every safetensors file written here carries a SHA-256 digest of its tensors and metadata
(metadata key ``content_sha256``). safetensors checks the header and the offsets but not
the bytes, so without the digest a flipped bit in the data would load as a wrong weight.
Files without the digest (written before it existed) still load, unchecked. The digest detects
damage, not tampering (anyone can recompute it); safety against a hostile file comes from never
unpickling: safetensors and JSON hold data only.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from seq2seq.config import short_repr

FORMAT_VERSION = 1
DIGEST_KEY = "content_sha256"
TEMPORARY_SUFFIX = ".tmp"

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import: os.umask can only be read by setting it


class RunDirError(ValueError):
    """A run directory or one of its files is missing, incomplete, corrupt or inconsistent.

    Defined here rather than in :mod:`seq2seq.checkpoint` (which re-exports it) because the
    trainer's checkpoint files raise it too, and ``training`` comes before ``checkpoint``.
    """


# ---------------------------------------------------------------- atomic writes


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable: without it a power cut after ``os.replace`` may undo it.

    Best effort: Windows cannot open a folder, and some file systems refuse to fsync one; the
    file itself is complete either way.
    """
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then move ``tmp_path`` onto ``path`` in one step.

    An OSError (full disk, read-only folder, ...) comes back naming ``path``, after the temporary
    file is removed: the folder is left as it was, old ``path`` included.
    """
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        reason = error.strerror or str(error)
        message = f"cannot write {path}: {reason}; the previous version of the file, if any, is unchanged"
        raise (OSError(error.errno, message) if error.errno is not None else OSError(message)) from error
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that a killed :func:`atomic_write` left in ``folder``; return them.

    Only hidden names ``.<file name>.<random part>.tmp`` are touched: the names ``atomic_write`` gives its temporaries.
    """
    stale = [p for p in folder.glob(f".*{TEMPORARY_SUFFIX}") if p.is_file() and p.name.count(".") >= 3]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


# ---------------------------------------------------------------- safetensors with a digest


def _digest(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes and every metadata entry, in name order."""
    hasher = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    for key in sorted(metadata):
        if key != DIGEST_KEY:
            hasher.update(f"{key}={metadata[key]}|".encode())
    return hasher.hexdigest()


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Serialize in memory, then write atomically with Python's file I/O.

    ``safetensors.torch.save_file`` would write from Rust, whose I/O errors (a full disk) arrive as
    ``SafetensorError`` instead of ``OSError``; writing the bytes here keeps one kind of error.
    """
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    full_metadata = {**metadata, DIGEST_KEY: _digest(tensors, metadata)}
    data = save(tensors, metadata=full_metadata)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def read_safetensors(path: Path, *, what: str = "weights file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of ``path``; a missing, unreadable, corrupt or altered file is a RunDirError."""
    if not path.is_file():
        found = "a folder" if path.is_dir() else "nothing"
        raise RunDirError(f"{path}: {what} not found (found {found})")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt files  # noqa: BLE001
        raise RunDirError(f"{path}: not a readable safetensors file ({error})") from None
    expected = metadata.get(DIGEST_KEY)
    if expected is not None and _digest(tensors, metadata) != expected:
        raise RunDirError(
            f"{path}: content does not match its {DIGEST_KEY} (the file was altered or damaged after it was written)"
        )
    return tensors, metadata


# ---------------------------------------------------------------- model weights


MODEL_PREFIX = "model."


def save_weights(model: torch.nn.Module, path: Path, *, metadata: dict[str, str] | None = None) -> None:
    write_safetensors(path, dict(model.state_dict()), metadata or {})


def _model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model tensors of a weights file or of a full training checkpoint (``model.*`` keys)."""
    if any(key.startswith(MODEL_PREFIX) for key in tensors):
        return {key[len(MODEL_PREFIX) :]: t for key, t in tensors.items() if key.startswith(MODEL_PREFIX)}
    return tensors


def _load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load into ``model``, naming missing, unexpected or mis-shaped tensors (expected vs found)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{name}: file {tuple(tensors[name].shape)} {tensors[name].dtype} vs model "
        f"{tuple(expected[name].shape)} {expected[name].dtype}"
        for name in sorted(set(expected) & set(tensors))
        if tensors[name].shape != expected[name].shape or tensors[name].dtype != expected[name].dtype
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:5]}")
        raise RunDirError(f"{path}: weights do not fit the configured model: {'; '.join(parts)}")
    model.load_state_dict(tensors)


def load_weights(model: torch.nn.Module, path: Path) -> dict[str, str]:
    """Load safetensors weights (a weights file or a training checkpoint) into ``model``; returns the file's metadata."""
    tensors, metadata = read_safetensors(path)
    _load_model_tensors(model, _model_tensors(tensors), path)
    return metadata


# ---------------------------------------------------------------- the trainer's state


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


def _optimizer_from_files(
    tensors: dict[str, torch.Tensor], payload: dict[str, Any], optimizer: torch.optim.Optimizer, path: Path
) -> dict[str, Any]:
    """The optimizer's state dict, after checking each tensor against the parameter it belongs to.

    ``Optimizer.load_state_dict`` checks only the group sizes; a moment tensor of the wrong shape
    would surface as a shape error in the middle of the next training step.
    """
    saved_ids = [param_id for group in payload["param_groups"] for param_id in group["params"]]
    params = [param for group in optimizer.param_groups for param in group["params"]]
    if len(saved_ids) != len(params):
        raise RunDirError(f"{path}: optimizer state for {len(saved_ids)} parameters, the model has {len(params)}")
    shapes = {int(param_id): tuple(param.shape) for param_id, param in zip(saved_ids, params, strict=True)}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            if not param_id.isdigit() or int(param_id) not in shapes:
                raise RunDirError(f"{path}: tensor {key} belongs to no parameter of the optimizer")
            if value.dim() > 0 and tuple(value.shape) != shapes[int(param_id)]:
                raise RunDirError(
                    f"{path}: tensor {key} has shape {tuple(value.shape)}, expected {shapes[int(param_id)]} "
                    "(the shape of its parameter)"
                )
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
    tensors = {MODEL_PREFIX + name: t for name, t in model.state_dict().items()}
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
    write_safetensors(path, tensors, metadata)


def _trainer_state(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """The JSON payload of a training checkpoint, with its format version checked."""
    if "trainer_state" not in metadata:
        raise RunDirError(f"{path}: holds weights only, not a training checkpoint; it cannot be resumed")
    try:
        payload = json.loads(metadata["trainer_state"])
    except (ValueError, RecursionError) as error:
        raise RunDirError(f"{path}: malformed trainer state in the metadata: {error}") from None
    if not isinstance(payload, dict):
        raise RunDirError(f"{path}: trainer state is a JSON {type(payload).__name__}, expected an object")
    if payload.get("format_version") != FORMAT_VERSION:
        raise RunDirError(
            f"{path}: format_version {short_repr(payload.get('format_version'))}; this seq2seq reads {FORMAT_VERSION}"
        )
    missing = sorted({"counters", "optimizer", "scheduler", "rng_python"} - set(payload))
    if missing:
        raise RunDirError(f"{path}: the trainer state lacks {missing}")
    return payload


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote; return the counters (epoch, step, ...).

    Every way the file can fail to fit (missing, corrupt, other format version, tensors of
    the wrong shape, a damaged state) is a :class:`RunDirError` naming the file and what is wrong.
    """
    tensors, metadata = read_safetensors(path, what="training checkpoint")
    payload = _trainer_state(path, metadata)
    _load_model_tensors(model, _model_tensors(tensors), path)
    if "rng.torch" not in tensors:
        raise RunDirError(f"{path}: tensor rng.torch (the random generator state) is missing")
    scheduler_state = payload["scheduler"]
    # ReduceLROnPlateau.load_state_dict copies every entry onto the scheduler object itself.
    if not isinstance(scheduler_state, dict) or not set(scheduler_state) <= set(scheduler.state_dict()):
        raise RunDirError(
            f"{path}: the scheduler state is not a {type(scheduler).__name__} state: expected entries "
            f"{sorted(scheduler.state_dict())}"
        )
    try:
        optimizer.load_state_dict(_optimizer_from_files(tensors, payload["optimizer"], optimizer, path))
        scheduler.load_state_dict(scheduler_state)
        torch.set_rng_state(tensors["rng.torch"])
        version, internal, gauss = payload["rng_python"]
        random.setstate((version, tuple(internal), gauss))
        counters = dict(payload["counters"])
    except RunDirError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise RunDirError(f"{path}: the trainer state does not fit this run ({type(error).__name__}: {error})") from None
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return counters

