"""``seq2seq export RUN --format onnx``: the run's model as ONNX graphs in ``RUN/onnx/``; loading
them back for decoding with onnxruntime (``--runtime onnx`` on generate / evaluate) is
:func:`seq2seq.checkpoint.load_onnx_model`.

``RUN/onnx/onnx.json`` records which weights were exported and their SHA-256, so an export that
no longer matches the run's weights (the run trained on) is refused instead of silently used.
The graphs are written atomically and the manifest last: a folder without a manifest is not an
export.
"""

from __future__ import annotations

import json
from pathlib import Path

from seq2seq import __version__
from seq2seq.checkpoint import load_run
from seq2seq.models.onnx_export import MANIFEST, export_onnx
from seq2seq.models.onnx_transformer import export_transformer_onnx
from seq2seq.run_files import RunDirError, atomic_write, atomic_write_text, file_sha256

EXPORT_FORMATS = ("onnx",)
RUNTIMES = ("torch", "onnx")


def export_run(run_dir: Path, *, which: str = "best", fmt: str = "onnx") -> Path:
    """Export the ``which`` weights of the run in ``run_dir``; returns the folder written."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    run = load_run(run_dir, which=which, device="cpu")
    exporters = {"recurrent": export_onnx, "transformer": export_transformer_onnx}
    architecture = run.config.model.architecture
    if architecture not in exporters:
        raise RunDirError(f"{run_dir}: ONNX export of a {architecture} model is not supported "
                          f"(supported: {', '.join(exporters)})")
    folder = run_dir / "onnx"
    (folder / MANIFEST).unlink(missing_ok=True)  # no manifest while the graphs are being replaced
    try:
        manifest = exporters[architecture](run.model, folder, write=atomic_write)
    except ValueError as error:
        raise RunDirError(f"{run_dir}: {error}") from None
    manifest.update({
        "format": "onnx",
        "weights": f"{which}.safetensors",
        "weights_sha256": file_sha256(run_dir / f"{which}.safetensors"),
        "seq2seq_version": __version__,
    })
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    return folder

