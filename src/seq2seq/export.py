"""``seq2seq export RUN --format onnx``: the run's model as ONNX graphs in ``RUN/onnx/``; loading
them back for decoding with onnxruntime (``--runtime onnx`` on generate / evaluate) is
:func:`seq2seq.checkpoint.load_onnx_model`. ``--format ctranslate2`` (Transformer runs): a
CTranslate2 model in ``RUN/ctranslate2/`` (``--runtime ctranslate2`` on generate), loaded by
:func:`seq2seq.checkpoint.load_ctranslate2_model`.

``RUN/onnx/onnx.json`` (``RUN/ctranslate2/ctranslate2.json``) records which weights were exported
and their SHA-256, so an export that no longer matches the run's weights (the run trained on) is
refused instead of silently used. The files are written first and the manifest last: a folder
without a manifest is not an export.
"""

from __future__ import annotations

import json
from pathlib import Path

from seq2seq import __version__
from seq2seq.checkpoint import LoadedRun, load_run
from seq2seq.models.onnx_export import MANIFEST, export_onnx
from seq2seq.models.onnx_transformer import export_transformer_onnx
from seq2seq.run_files import RunDirError, atomic_write, atomic_write_text, file_sha256

EXPORT_FORMATS = ("onnx", "ctranslate2")
RUNTIMES = ("torch", "onnx", "ctranslate2")


def export_run(run_dir: Path, *, which: str = "best", fmt: str = "onnx") -> Path:
    """Export the ``which`` weights of the run in ``run_dir``; returns the folder written."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    run = load_run(run_dir, which=which, device="cpu")
    if fmt == "ctranslate2":
        return _export_ctranslate2(run, which=which)
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


def _export_ctranslate2(run: LoadedRun, *, which: str) -> Path:
    """``RUN/ctranslate2/``: CTranslate2's model.bin, config and vocabularies, then the manifest."""
    architecture = run.config.model.architecture
    if architecture != "transformer":
        raise RunDirError(f"{run.run_dir}: CTranslate2 export supports transformer runs only, this run is {architecture} "
                          f"(export it with --format onnx instead)")
    if run.model.copies:
        raise RunDirError(f"{run.run_dir}: CTranslate2 has no copy mechanism (model.transformer.copy): decode this "
                          "run with the torch runtime, or export it with --format onnx")
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        raise RunDirError("CTranslate2 export needs the ctranslate2 package: pip install -e '.[ctranslate2]'") from None
    from seq2seq.ctranslate2_runtime import MANIFEST as CT2_MANIFEST
    from seq2seq.models.ctranslate2_export import transformer_spec

    folder = run.run_dir / "ctranslate2"
    (folder / CT2_MANIFEST).unlink(missing_ok=True)  # no manifest while the model is being replaced
    # sinusoids for every position a source or a decoding step can reach (learned positions bring their own)
    positions = max(1024, run.config.decode.max_len + 1, run.config.data.max_src_len)
    spec = transformer_spec(run.model, src_tokens=run.src_vocab.itos, tgt_tokens=run.tgt_vocab.itos, positions=positions)
    spec.optimize(quantization=None)  # float32, as trained
    folder.mkdir(parents=True, exist_ok=True)
    spec.save(str(folder))
    positions = run.model.max_positions or positions  # the rows of the table written: the longest input or output
    manifest = {"format": "ctranslate2", "positions": positions, "weights": f"{which}.safetensors",
                "weights_sha256": file_sha256(run.run_dir / f"{which}.safetensors"), "seq2seq_version": __version__}
    atomic_write_text(folder / CT2_MANIFEST, json.dumps(manifest, indent=2))
    return folder
