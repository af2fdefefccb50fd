"""The run directory: everything needed to resume, evaluate, generate or serve, and nothing pickled.

Layout::

    RUN/config.yaml                 resolved configuration (all defaults filled in)
    RUN/src_vocab.json, tgt_vocab.json
    RUN/src_subwords.model, ...     SentencePiece models (protobuf), when data.*_subwords asks for them
    RUN/best.safetensors            weights with the best validation loss
    RUN/last.safetensors            the last completed epoch: weights plus optimizer, scheduler,
                                    RNG state and counters in one file (what --resume reads)
    RUN/metrics.jsonl               one JSON record per logged step and per epoch, and an end record
                                    (why training stopped) when training returns
    RUN/run.json                    format version, package version, parameter count
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seq2seq import __version__
from seq2seq.config import ConfigError, DataConfig, RunConfig, build_config, config_to_yaml, load_config_file, short_repr
from seq2seq.data.corpus import build_tokenizers
from seq2seq.data.subwords import subword_file_name
from seq2seq.data.tokenizers import Tokenizer
from seq2seq.data.vocab import Vocab
from seq2seq.models.build import build_model, count_parameters
from seq2seq.models.onnx_export import MANIFEST, OnnxSeq2Seq
from seq2seq.models.onnx_transformer import OnnxTransformer
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.models.transformer import Transformer
from seq2seq.run_files import (
    FORMAT_VERSION,
    RunDirError,
    atomic_write,
    atomic_write_text,
    file_sha256,
    load_weights,
    remove_temporaries,
)

logger = logging.getLogger(__name__)

RUN_MARKER = "run.json"
CHECKPOINTS = ("best", "last", "averaged")  # the weights a run directory can hold; averaged: `seq2seq average`


def init_run_dir(
    run_dir: Path,
    *,
    config: RunConfig,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    parameters: int,
    overwrite: bool,
    subword_models: Mapping[str, bytes] | None = None,
) -> None:
    """Create a new run directory; refuse to clobber an existing run unless ``overwrite``."""
    if (run_dir / RUN_MARKER).exists() and not overwrite:
        raise RunDirError(
            f"{run_dir}: already holds a run; pass --resume {run_dir} to continue it, --overwrite to replace it, "
            "or choose another --out"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    # The marker goes first and comes back last, so a crash in between never leaves a
    # folder that looks like a complete run mixing old and new files.
    (run_dir / RUN_MARKER).unlink(missing_ok=True)
    remove_temporaries(run_dir)
    stale = ["metrics.jsonl", "best.safetensors", "last.safetensors", "averaged.safetensors",
             *(p.name for p in run_dir.glob("eval_*.json")), *(p.name for p in run_dir.glob("epoch-*.safetensors"))]
    for name in stale:
        (run_dir / name).unlink(missing_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
    atomic_write_text(run_dir / "src_vocab.json", src_vocab.to_json())
    atomic_write_text(run_dir / "tgt_vocab.json", tgt_vocab.to_json())
    for side in ("src", "tgt"):
        path = run_dir / subword_file_name(side)
        if subword_models and side in subword_models:
            atomic_write(path, lambda tmp, model=subword_models[side]: tmp.write_bytes(model))
        else:
            path.unlink(missing_ok=True)
    meta = {"format_version": FORMAT_VERSION, "seq2seq_version": __version__, "parameters": parameters}
    atomic_write_text(run_dir / RUN_MARKER, json.dumps(meta, indent=2))


def load_run_config(run_dir: Path) -> RunConfig:
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    marker = run_dir / RUN_MARKER
    if not marker.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no {RUN_MARKER}); train one with `seq2seq train --out {run_dir}`")
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunDirError(f"{marker}:{error.lineno}: malformed JSON: {error.msg}") from None
    except (ValueError, RecursionError) as error:  # undecodable bytes, absurd nesting, a 5000-digit int
        problem = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise RunDirError(f"{marker}: malformed JSON: {problem}") from None
    if not isinstance(meta, dict):
        raise RunDirError(f"{marker}: is a JSON {type(meta).__name__}: expected an object with a format_version")
    if meta.get("format_version") != FORMAT_VERSION:
        raise RunDirError(
            f"{marker}: format_version {short_repr(meta.get('format_version'))}; this seq2seq reads {FORMAT_VERSION}"
        )
    try:
        base = load_config_file(run_dir / "config.yaml")
        _coverage_weight_of_older_runs(base)
        return build_config(base=base, source=str(run_dir / "config.yaml"))
    except ConfigError as error:
        raise RunDirError(str(error)) from None


def _coverage_weight_of_older_runs(saved: object) -> None:
    """Runs saved before commit 210de7c hold ``train.coverage_weight: null``, which then meant 1.0
    for a coverage model (0.1 since): such a run keeps the weight it trained with."""
    train = saved.get("train") if isinstance(saved, dict) else None
    model = saved.get("model") if isinstance(saved, dict) else None
    decoder = model.get("decoder") if isinstance(model, dict) else None
    if isinstance(train, dict) and isinstance(decoder, dict) and decoder.get("coverage") is True \
            and train.get("coverage_weight", 0) is None:
        train["coverage_weight"] = 1.0


def load_vocabs(run_dir: Path) -> tuple[Vocab, Vocab]:
    """The source and target vocabularies of a run; any problem with them is a RunDirError."""
    try:
        return Vocab.load(run_dir / "src_vocab.json"), Vocab.load(run_dir / "tgt_vocab.json")
    except ValueError as error:
        raise RunDirError(str(error)) from None


def load_subword_models(run_dir: Path, data: DataConfig) -> dict[str, bytes]:
    """The SentencePiece models of the sides that ``data`` splits into subwords; a missing or
    unreadable model is a RunDirError that names the file."""
    models = {}
    for side in ("src", "tgt"):
        if getattr(data, f"{side}_subwords") == "none":
            continue
        path = run_dir / subword_file_name(side)
        try:
            models[side] = path.read_bytes()
        except OSError as error:
            raise RunDirError(f"{path}: cannot read the {side} subword model ({error.strerror or error}); "
                              f"config.yaml sets data.{side}_subwords") from None
    return models


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    model: Seq2Seq
    src_vocab: Vocab
    tgt_vocab: Vocab
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    device: torch.device
    subword_models: dict[str, bytes] = field(default_factory=dict)
    members: tuple[Path, ...] = ()  # an ensemble's run directories, this one first; empty for one model

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)


def load_run(
    run_dir: Path,
    *,
    which: str = "best",
    device: torch.device | str = "cpu",
    quantize: str | None = None,
    runtime: str = "torch",
) -> LoadedRun:
    """Rebuild the model of a run directory and load its ``best``, ``last`` or ``averaged`` weights
    (``quantize="int8"``: then quantize it for CPU decoding, see :mod:`seq2seq.models.quantize`;
    ``runtime="onnx"``: decode with the run's ONNX export instead, see :mod:`seq2seq.export`)."""
    if which not in CHECKPOINTS:
        raise ValueError(f"which={which!r}; expected one of {', '.join(CHECKPOINTS)}")
    if runtime not in ("torch", "onnx", "ctranslate2"):
        raise ValueError(f"runtime={runtime!r}; expected 'torch', 'onnx' or 'ctranslate2'")
    if runtime != "torch" and torch.device(device).type != "cpu":
        raise ValueError(f"the {runtime} runtime decodes on the CPU: device cpu")
    if runtime == "onnx" and quantize is not None:
        raise ValueError("the onnx runtime decodes in float32: no quantize (int8 works with torch and ctranslate2)")
    config = load_run_config(run_dir)
    src_vocab, tgt_vocab = load_vocabs(run_dir)
    model = build_model(config.model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab), pad_index=Vocab.pad_index)
    weights = run_dir / f"{which}.safetensors"
    if not weights.exists():
        if which == "averaged":
            raise RunDirError(f"{weights}: not found; write it first with: seq2seq average {run_dir} "
                              "(which needs a run trained with train.keep_epoch_checkpoints > 0)")
        raise RunDirError(f"{weights}: not found; no epoch of this run has finished with a finite validation loss")
    metadata = load_weights(model, weights)
    if which == "averaged":
        logger.info("%s: the mean of the weights of epochs %s", weights, metadata.get("averaged_epochs", "?"))
    device = torch.device(device)
    model.to(device).eval()
    if quantize is not None and runtime == "torch":
        from seq2seq.models.quantize import quantize_for_cpu

        model = quantize_for_cpu(model, quantize)
    if runtime == "onnx":
        model = load_onnx_model(run_dir, model, which=which)
    elif runtime == "ctranslate2":
        model = load_ctranslate2_model(run_dir, model, which=which, src_itos=src_vocab.itos, tgt_itos=tgt_vocab.itos,
                                       compute_type="int8" if quantize == "int8" else "float32")
        config = _without_length_penalty(run_dir, config)
    subword_models = load_subword_models(run_dir, config.data)
    try:
        src_tokenizer, tgt_tokenizer = build_tokenizers(config.data, subword_models)
    except RuntimeError as error:  # SentencePiece's message for a corrupt model file
        raise RunDirError(f"{run_dir}: a subword model cannot be read: {error}") from None
    return LoadedRun(run_dir, config, model, src_vocab, tgt_vocab, src_tokenizer, tgt_tokenizer, device, subword_models)


def load_onnx_model(run_dir: Path, reference: Seq2Seq | Transformer, *, which: str) -> OnnxSeq2Seq | OnnxTransformer:
    """The ONNX export of ``run_dir`` (written by :func:`seq2seq.export.export_run`), checked
    against the run's ``which`` weights: an export of other weights is refused, not silently used."""
    folder = run_dir / "onnx"
    _check_export(run_dir, folder / MANIFEST, fmt="onnx", which=which)
    try:
        if isinstance(reference, Transformer):
            return OnnxTransformer(folder, reference)
        return OnnxSeq2Seq(folder, reference)
    except Exception as error:  # onnxruntime raises its own exception types for a damaged graph
        raise RunDirError(f"{folder}: the ONNX graphs cannot be loaded: {error}") from None


def load_ctranslate2_model(run_dir: Path, reference: Seq2Seq | Transformer, *, which: str, src_itos: Sequence[str],
                           tgt_itos: Sequence[str], compute_type: str = "float32") -> torch.nn.Module:
    """The CTranslate2 export of ``run_dir`` (``seq2seq export RUN --format ctranslate2``), checked
    against the run's ``which`` weights like the ONNX export."""
    from seq2seq.ctranslate2_runtime import MANIFEST as CT2_MANIFEST, CTranslate2Model

    if not isinstance(reference, Transformer):
        raise RunDirError(f"{run_dir}: the ctranslate2 runtime decodes transformer runs only (use --runtime onnx)")
    folder = run_dir / "ctranslate2"
    _check_export(run_dir, folder / CT2_MANIFEST, fmt="ctranslate2", which=which)
    try:
        # as many threads as torch would use (train.threads / OMP_NUM_THREADS decide both)
        return CTranslate2Model(folder, reference, src_itos=src_itos, tgt_itos=tgt_itos, compute_type=compute_type,
                                threads=torch.get_num_threads())
    except ImportError:
        raise RunDirError("the ctranslate2 runtime needs the ctranslate2 package: pip install -e '.[ctranslate2]'") from None
    except Exception as error:  # CTranslate2 raises its own exception types for a damaged model
        raise RunDirError(f"{folder}: the CTranslate2 model cannot be loaded: {error}") from None


def _check_export(run_dir: Path, path: Path, *, fmt: str, which: str) -> None:
    """Refuse an export whose manifest is missing, unreadable or names other weights than ``which``."""
    if not path.is_file():
        raise RunDirError(f"{path}: not found; export the run first: seq2seq export {run_dir} --format {fmt}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        exported, digest = manifest["weights"], manifest["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunDirError(f"{path}: not a readable export manifest ({error})") from None
    if exported != f"{which}.safetensors" or digest != file_sha256(run_dir / f"{which}.safetensors"):
        raise RunDirError(
            f"{path.parent}: the export holds other weights than {run_dir / f'{which}.safetensors'} "
            f"(exported: {exported}); export again: seq2seq export {run_dir} --format {fmt} --checkpoint {which}"
        )


# The data settings that decide how a text becomes ids and ids become text: ensemble members must agree.
_TEXT_SETTINGS = ("src_tokenizer", "tgt_tokenizer", "lowercase_src", "lowercase_tgt", "src_subwords", "tgt_subwords",
                  "slots", "src_lang", "tgt_lang")


def load_ensemble(
    run_dirs: Sequence[Path],
    *,
    which: str = "best",
    device: torch.device | str = "cpu",
    quantize: str | None = None,
) -> LoadedRun:
    """The runs of ``run_dirs`` as one :class:`~seq2seq.models.ensemble.Ensemble` (the mean of their
    output distributions). The first run gives the configuration, vocabularies and tokenizers; every
    other run must have the same vocabularies, subword models and text settings, or it is refused
    with a RunDirError that names it and what differs."""
    from seq2seq.models.ensemble import Ensemble

    if not run_dirs:
        raise ValueError("an ensemble needs at least one run directory")
    runs = [load_run(run_dir, which=which, device=device, quantize=quantize) for run_dir in run_dirs]
    first = runs[0]
    for run in runs[1:]:
        problems = [
            f"the {side} vocabulary ({len(getattr(run, f'{side}_vocab'))} vs {len(getattr(first, f'{side}_vocab'))} tokens)"
            for side in ("src", "tgt")
            if getattr(run, f"{side}_vocab").itos != getattr(first, f"{side}_vocab").itos
        ]
        problems += [
            f"data.{key} ({getattr(run.config.data, key)!r} vs {getattr(first.config.data, key)!r})"
            for key in _TEXT_SETTINGS
            if getattr(run.config.data, key) != getattr(first.config.data, key)
        ]
        if run.subword_models != first.subword_models:
            problems.append("the subword models")
        if run.model.copies != first.model.copies:
            problems.append(f"the copy mechanism ({run.model.copies} vs {first.model.copies})")
        if problems:
            raise RunDirError(
                f"{run.run_dir}: cannot join an ensemble with {first.run_dir}: {', '.join(problems)} differ; "
                "ensemble members must be trained on the same data with the same vocabularies"
            )
    model = Ensemble([run.model for run in runs]).eval()
    return LoadedRun(first.run_dir, first.config, model, first.src_vocab, first.tgt_vocab, first.src_tokenizer,
                     first.tgt_tokenizer, first.device, first.subword_models, members=tuple(run.run_dir for run in runs))


def _without_length_penalty(run_dir: Path, config: RunConfig) -> RunConfig:
    """``config`` for decoding through CTranslate2, whose beam search has none of our length penalties:
    a run's ``decode.length_penalty`` gives way to ``none`` there, with a warning (a penalty asked for by
    name is refused where the request is read)."""
    decode = config.decode
    if decode.length_penalty == "none":
        return config
    logger.warning("%s: the ctranslate2 runtime's beam search has no length penalty, so the run's "
                   "decode.length_penalty (%s, alpha %g) is not applied: finished outputs are ranked by their "
                   "summed log-probabilities (length penalty none)", run_dir, decode.length_penalty, decode.alpha)
    return config.model_copy(update={"decode": decode.model_copy(update={"length_penalty": "none"})})


def load_for_decoding(
    run_dir: Path,
    *,
    ensemble: Sequence[Path] = (),
    which: str = "best",
    device: torch.device | str = "cpu",
    quantize: str | None = None,
    runtime: str = "torch",
) -> LoadedRun:
    """:func:`load_run`, or with ``ensemble`` (more run directories) :func:`load_ensemble` of all of
    them, which decodes with the torch runtime only."""
    if not ensemble:
        return load_run(run_dir, which=which, device=device, quantize=quantize, runtime=runtime)
    if runtime != "torch":
        raise ValueError("an ensemble decodes with the torch runtime only")
    return load_ensemble([run_dir, *ensemble], which=which, device=device, quantize=quantize)
