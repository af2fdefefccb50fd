"""``seq2seq export RUN --format onnx``: the run's model as ONNX graphs in ``RUN/onnx/``, and
loading them back for decoding with onnxruntime (``--runtime onnx`` on generate / evaluate).

``RUN/onnx/onnx.json`` records which weights were exported and their SHA-256, so an export that
no longer matches the run's weights (the run trained on) is refused instead of silently used.
The graphs are written atomically and the manifest last: a folder without a manifest is not an
export.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from seq2seq import __version__
from seq2seq.models.onnx_export import MANIFEST, OnnxSeq2Seq, export_onnx
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.training.checkpointing import RunDirError, atomic_write, atomic_write_text

EXPORT_FORMATS = ("onnx",)
RUNTIMES = ("torch", "onnx")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_run(run_dir: Path, *, which: str = "best", fmt: str = "onnx") -> Path:
    """Export the ``which`` weights of the run in ``run_dir``; returns the folder written."""
    from seq2seq.checkpoint import load_run

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    run = load_run(run_dir, which=which, device="cpu")
    folder = run_dir / "onnx"
    (folder / MANIFEST).unlink(missing_ok=True)  # no manifest while the graphs are being replaced
    try:
        manifest = export_onnx(run.model, folder, write=atomic_write)
    except ValueError as error:
        raise RunDirError(f"{run_dir}: {error}") from None
    manifest.update({
        "format": "onnx",
        "weights": f"{which}.safetensors",
        "weights_sha256": _sha256(run_dir / f"{which}.safetensors"),
        "seq2seq_version": __version__,
    })
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    return folder


def load_onnx_model(run_dir: Path, reference: Seq2Seq, *, which: str) -> OnnxSeq2Seq:
    """The exported model of ``run_dir``, checked against the run's ``which`` weights."""
    folder = run_dir / "onnx"
    path = folder / MANIFEST
    if not path.is_file():
        raise RunDirError(f"{path}: not found; export the run first: seq2seq export {run_dir} --format onnx")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        exported, digest = manifest["weights"], manifest["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunDirError(f"{path}: not a readable export manifest ({error})") from None
    if exported != f"{which}.safetensors" or digest != _sha256(run_dir / f"{which}.safetensors"):
        raise RunDirError(
            f"{folder}: the export holds other weights than {run_dir / f'{which}.safetensors'} "
            f"(exported: {exported}); export again: seq2seq export {run_dir} --checkpoint {which}"
        )
    try:
        return OnnxSeq2Seq(folder, reference)
    except Exception as error:  # onnxruntime raises its own exception types for a damaged graph
        raise RunDirError(f"{folder}: the ONNX graphs cannot be loaded: {error}") from None
