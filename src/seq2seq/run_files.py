"""The files of a run directory: atomic writes, safetensors with a digest, model weights.

Pure file utilities, shared by the trainer (:mod:`seq2seq.training.checkpointing`), the run
directory (:mod:`seq2seq.checkpoint`), exports and the pipeline, so that none of them imports
``training`` for them.

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
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

FORMAT_VERSION = 1  # of run.json and of the trainer state in last.safetensors
DIGEST_KEY = "content_sha256"
TEMPORARY_SUFFIX = ".tmp"

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import: os.umask can only be read by setting it


class RunDirError(ValueError):
    """A run directory or one of its files is missing, incomplete, corrupt or inconsistent.

    Defined here rather than in :mod:`seq2seq.checkpoint` (which re-exports it) because the
    trainer's checkpoint files and exports raise it too, and this module comes before both.
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
    # Tied weights (the Transformer's output layer and target embedding) are one tensor under two
    # names, and safetensors refuses shared memory: each later name gets its own copy (loading then
    # writes the same values twice).
    storages: set[int] = set()
    for name, tensor in tensors.items():
        if tensor.numel() and tensor.untyped_storage().data_ptr() in storages:
            tensors[name] = tensor.clone()
        storages.add(tensors[name].untyped_storage().data_ptr())
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


def model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model tensors of a weights file or of a full training checkpoint (``model.*`` keys)."""
    if any(key.startswith(MODEL_PREFIX) for key in tensors):
        return {key[len(MODEL_PREFIX) :]: t for key, t in tensors.items() if key.startswith(MODEL_PREFIX)}
    return tensors


def _architecture(names: Iterable[str]) -> str | None:
    """The model family (``model.architecture``) a set of weight names belongs to, for error messages:
    the Transformer's layers have a ``self_attention``, the recurrent encoder an ``rnn``; None if unsure."""
    names = list(names)
    if any(".self_attention." in name for name in names):
        return "transformer"
    if any(name.startswith("encoder.rnn.") for name in names):
        return "recurrent"
    return None


def load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
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
    ours, theirs = _architecture(expected), _architecture(tensors)
    if ours != theirs and None not in (ours, theirs):
        raise RunDirError(f"{path}: holds the weights of a {theirs} model, but the configuration describes a {ours} "
                          f"model (model.architecture); use the run's own config.yaml, or train a new run")
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
    load_model_tensors(model, model_tensors(tensors), path)
    return metadata


def file_sha256(path: Path) -> str:
    """SHA-256 of the bytes of ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
