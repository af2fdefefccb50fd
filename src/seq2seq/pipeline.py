"""The library functions behind the CLI subcommands ``train`` and ``evaluate``."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from seq2seq.checkpoint import LoadedRun, init_run_dir, load_for_decoding, load_run, load_run_config, load_subword_models, load_vocabs
from seq2seq.config import ConfigError, RunConfig, short_repr
from seq2seq.data.corpus import Corpus, build_corpus
from seq2seq.data.vocab import Vocab
from seq2seq.decoding.search import decode_workers
from seq2seq.devices import check_precision, resolve_device
from seq2seq.evaluation.evaluate import EvalReport, evaluate, task_metric_for
from seq2seq.models.build import build_model, count_parameters
from seq2seq.models.interface import max_positions, supported_max_len
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.run_files import atomic_write_text
from seq2seq.training.distributed import start_ranks
from seq2seq.training.metrics_log import MetricsLog
from seq2seq.training.seeding import seed_everything
from seq2seq.training.trainer import BatchCallback, Trainer, TrainResult
from seq2seq.training.update import NonFiniteLossError

logger = logging.getLogger(__name__)


RESUMABLE_KEYS = ("epochs", "time_budget_s", "max_steps", "early_stopping_patience", "device", "threads",
                  "on_nonfinite", "save_every_steps")


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _resume_config(saved: RunConfig, requested: RunConfig) -> RunConfig:
    """On resume only the budget (``train.epochs`` and a few others) may change: a different
    model, data or optimizer setting would not fit the saved weights and state."""
    allowed = {f"train.{key}" for key in RESUMABLE_KEYS}
    before, after = _flatten(saved.model_dump(mode="json")), _flatten(requested.model_dump(mode="json"))
    changed = sorted(key for key in before if before[key] != after.get(key) and key not in allowed)
    if changed:
        raise ConfigError(
            f"cannot change {', '.join(changed)} when resuming; only {', '.join(sorted(allowed))} may change"
        )
    return requested


def _finished(ended: TrainResult, config: RunConfig) -> bool:
    """Whether a run that ended as ``ended`` says is done under ``config``'s budget (more epochs or
    steps than it trained would continue it)."""
    last = ended.history[-1]
    if ended.stopped_by == "epochs":
        return last.epoch >= config.train.epochs
    if ended.stopped_by == "max_steps":
        return config.train.max_steps is not None and last.step >= config.train.max_steps
    if ended.stopped_by == "early_stopping":
        return False  # Trainer.fit stops at once unless the patience given now is larger
    return True  # its time budget ran out: one that counts per invocation


def _check_same_vocabs(run_dir: Path, corpus: Corpus) -> None:
    """A run resumed on a corpus built elsewhere (``seq2seq compare --resume``) must have been trained
    with the same vocabularies, or its weights would read other tokens."""
    for side, saved, built in zip(("source", "target"), load_vocabs(run_dir), (corpus.src_vocab, corpus.tgt_vocab)):
        if saved.itos != built.itos:
            raise ConfigError(
                f"{run_dir}: its {side} vocabulary ({len(saved):,} tokens) differs from the one built from this data "
                f"({len(built):,} tokens): it was trained on other data or settings; remove it or pass --overwrite"
            )


def _first_example(corpus: Corpus, indices: list[int]) -> str:
    """Where the first example of a failing batch comes from, so the user can look at the input."""
    train = corpus.examples.get("train", [])
    if not indices or not 0 <= indices[0] < len(train):
        return ""
    example = train[indices[0]]
    return f"; the first is {example.origin or 'the built-in task'}: {short_repr(example.src)}"


@dataclass
class TrainOutcome:
    run_dir: Path
    config: RunConfig
    corpus: Corpus
    model: Seq2Seq
    parameters: int
    result: TrainResult


def train(
    config: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_batch: BatchCallback | None = None,
    corpus: Corpus | None = None,
    keep_finished: bool = False,
) -> TrainOutcome:
    """Train a model into ``run_dir`` (new, or continued with ``resume``); best weights end up loaded.
    ``keep_finished`` (with ``resume``): a run whose training ended (its log's end record) and that
    the budget given now would not train further is loaded, its result read from its log; a time
    budget counts per invocation, so a run that one ended counts as finished here, where a plain
    resume would give it another ``time_budget_s``."""
    if resume:
        config = _resume_config(load_run_config(run_dir), config)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed)
    if resume and corpus is not None:
        _check_same_vocabs(run_dir, corpus)
    elif resume:
        corpus = build_corpus(
            config.data, config.vocab, vocabs=load_vocabs(run_dir), subword_models=load_subword_models(run_dir, config.data)
        )
    else:
        corpus = corpus or build_corpus(config.data, config.vocab)
    ended = MetricsLog(run_dir / "metrics.jsonl").ended() if resume and keep_finished else None
    if ended is not None and _finished(ended, config):
        best = load_run(run_dir, which="best", device=resolve_device(config.train.device))
        logger.info("%s: training had ended (%s); not trained further", run_dir, ended.stop_message)
        return TrainOutcome(run_dir, config, corpus, best.model, count_parameters(best.model), ended)
    model = build_model(config.model, src_vocab_size=len(corpus.src_vocab), tgt_vocab_size=len(corpus.tgt_vocab), pad_index=Vocab.pad_index)
    for split in corpus.encoded:  # held-out data is not filtered by data.max_*_len: refuse it now, not after training
        _check_positions(model, corpus, split)
    parameters = count_parameters(model)
    logger.info("model %s: %s trainable parameters", config.model.preset or "custom", f"{parameters:,}")
    device = resolve_device(config.train.device)  # before anything is written
    check_precision(config.train.precision, device)
    ranks, device = start_ranks(device)  # under torchrun: this process's rank and device (else rank 0 of 1)
    if not resume and ranks.is_main:
        init_run_dir(
            run_dir, config=config, src_vocab=corpus.src_vocab, tgt_vocab=corpus.tgt_vocab, parameters=parameters,
            overwrite=overwrite, subword_models=corpus.subword_models,
        )
    ranks.barrier()  # the run directory is in place before any rank reads it
    trainer = Trainer(model=model, config=config.train, pad_index=Vocab.pad_index, device=device, run_dir=run_dir, on_batch=on_batch,
                      ranks=ranks)
    if resume:
        trainer.resume()
    try:
        result = trainer.fit(corpus.encoded["train"], corpus.encoded["valid"])
    except NonFiniteLossError as error:
        raise NonFiniteLossError(f"{error}{_first_example(corpus, error.indices)}", indices=error.indices) from None
    best = load_run(run_dir, which="best", device=device)
    return TrainOutcome(run_dir, config, corpus, best.model, parameters, result)


def _check_positions(model: Seq2Seq, corpus: Corpus, split: str) -> None:
    """Refuse, before decoding, a split whose sources or references a Transformer's learned
    positions cannot encode (the teacher-forced loss reads <sos> + the reference)."""
    limit = max_positions(model)
    if limit is None:
        return
    for number, pair in enumerate(corpus.encoded[split], start=1):
        longest = max(len(pair.src), len(pair.tgt) - 1)  # tgt is <sos> y <eos>; the decoder reads all but <eos>
        if longest > limit:
            raise ValueError(f"{split} example {number} needs {longest} positions, but this model's learned positions "
                             f"cover {limit} (model.transformer.max_positions)")


def run_corpus(run: LoadedRun) -> Corpus:
    """A trained run's own data, read with its vocabularies and subword models (what it is scored on)."""
    return build_corpus(run.config.data, run.config.vocab, vocabs=(run.src_vocab, run.tgt_vocab),
                        subword_models=run.subword_models)


def _constraint_name(constrain: str | None, config: RunConfig) -> str | None:
    """The constraint to decode with: ``constrain`` if given, else the run's ``decode.constrain``
    (``none`` means no constraint: None)."""
    chosen = config.decode.constrain if constrain is None else constrain
    return None if chosen == "none" else chosen


def evaluate_split(
    model: Seq2Seq,
    corpus: Corpus,
    config: RunConfig,
    split: str,
    *,
    device: torch.device,
    beam_size: int = 1,
    constrain: str | None = None,
) -> EvalReport:
    """Decode one split of ``corpus`` and score it with every metric its data has: token-level
    figures, and the task's published metric on the detokenized outputs (placeholders restored).
    ``constrain``: ``python``, ``grammar`` or ``none``; None takes the run's ``decode.constrain``."""
    data = config.data
    _check_positions(model, corpus, split)
    report, _ = evaluate(
        model,
        corpus.encoded[split],
        corpus.reference_tokens(split),
        tgt_vocab=corpus.tgt_vocab,
        tgt_tokenizer=corpus.tgt_tokenizer,
        max_len=supported_max_len(model, config.decode.max_len),
        batch_size=config.decode.batch_size,
        device=device,
        is_code=data.tgt_tokenizer == "python",
        beam_size=beam_size,
        constrain=_constraint_name(constrain, config),
        code_unit=data.code_unit or "program",
        task_metric=None if data.reverse else task_metric_for(data.format, has_label_map=data.label_map is not None),
        raw_references=[example.tgt for example in corpus.examples[split]],
        task_lowercase=data.lowercase_tgt,
        slots=corpus.slots.get(split),
        workers=decode_workers(config.decode.workers, device, model=model),
        no_repeat_ngram_size=config.decode.no_repeat_ngram_size,
        length_penalty=config.decode.length_penalty if beam_size > 1 else "none",  # greedy compares no lengths
        alpha=config.decode.alpha,
    )
    return report


def runs_hash(runs: Sequence[Path]) -> str:
    """8 hex digits that name a list of run directories (their resolved paths), for report file names."""
    return hashlib.sha256("\n".join(str(Path(run).resolve()) for run in runs).encode()).hexdigest()[:8]


def ensemble_tag(run_dir: Path, ensemble: Sequence[Path]) -> str:
    """The suffix of an ensemble's report files (``_ensemble3-<hash of the members>``; empty for one
    model): one report per member list, so that another ensemble or the model alone never overwrites it."""
    return f"_ensemble{len(ensemble) + 1}-{runs_hash([run_dir, *ensemble])}" if ensemble else ""


def evaluate_run(
    run_dir: Path,
    *,
    split: str = "test",
    which: str = "best",
    device: str = "auto",
    output: Path | None = None,
    corpus: Corpus | None = None,
    beam_size: int = 1,
    constrain: str | None = None,
    quantize: str | None = None,
    runtime: str = "torch",
    ensemble: Sequence[Path] = (),
    batch_size: int | None = None,
    workers: int | None = None,
    no_repeat_ngram_size: int | None = None,
    length_penalty: str | None = None,
    alpha: float | None = None,
) -> EvalReport:
    """Evaluate a trained run on one split of its own data (as configured in the run);
    ``batch_size``: sentences per decoding batch instead of the run's ``decode.batch_size``;
    ``workers``: batches decoded at once instead of the run's ``decode.workers``;
    ``no_repeat_ngram_size``: instead of the run's ``decode.no_repeat_ngram_size``; ``length_penalty``
    and ``alpha``: instead of the run's ``decode.length_penalty`` and ``decode.alpha`` (beam search only);
    ``quantize="int8"`` decodes with an int8-quantized copy of the model (CPU only);
    ``runtime="onnx"`` with the run's ONNX export through onnxruntime (CPU only), ``"ctranslate2"``
    with its CTranslate2 export (transformer runs; with ``quantize="int8"`` in int8); ``ensemble``:
    more runs whose models decode together with this one (the mean of their distributions)."""
    torch_device = resolve_device("cpu" if (quantize or runtime != "torch") and device == "auto" else device)
    run = load_for_decoding(run_dir, ensemble=ensemble, which=which, device=torch_device, quantize=quantize, runtime=runtime)
    corpus = corpus or run_corpus(run)
    if split not in corpus.encoded:
        raise ValueError(f"unknown split {split!r}; this data has {sorted(corpus.encoded)}")
    if not corpus.encoded[split]:
        raise ValueError(f"split {split!r} of {run.config.data.format} data is empty")
    config = run.config
    decode = {key: value for key, value in (("batch_size", batch_size), ("workers", workers),
                                            ("no_repeat_ngram_size", no_repeat_ngram_size),
                                            ("length_penalty", length_penalty), ("alpha", alpha)) if value is not None}
    if decode:
        config = config.model_copy(update={"decode": config.decode.model_copy(update=decode)})
    if runtime == "ctranslate2" and beam_size > 1 and config.decode.length_penalty != "none":  # before any decoding
        raise ConfigError(f"{run_dir}: the ctranslate2 runtime decodes without a length penalty, got --length-penalty "
                          f"{config.decode.length_penalty}: give --length-penalty none, or leave it out")
    constrain = _constraint_name(constrain, config)
    report = evaluate_split(run.model, corpus, config, split, device=torch_device, beam_size=beam_size,
                            constrain=constrain or "none")
    if output is not None:
        atomic_write_text(output, "".join(text.replace("\n", "\\n") + "\n" for text in report.predictions))
    name = f"eval_{split}" + (f"_beam{beam_size}" if beam_size > 1 else "") + (f"_{constrain}" if constrain else "")
    name += f"_{quantize}" if quantize else ""
    name += f"_{runtime}" if runtime != "torch" else ""
    name += f"_batch{batch_size}" if batch_size is not None else ""
    name += f"_norepeat{config.decode.no_repeat_ngram_size}" if config.decode.no_repeat_ngram_size else ""
    name += f"_{report.length_penalty}{report.alpha:g}" if report.length_penalty != "none" else ""
    name += f"_{which}" if which != "best" else ""  # other weights never overwrite the best weights' report
    name += ensemble_tag(run_dir, ensemble)
    summary = {**report.summary(), "checkpoint": which, "ensemble": [str(run_dir), *map(str, ensemble)] if ensemble else None,
               "beam_size": beam_size, "batch_size": config.decode.batch_size,
               "workers": decode_workers(config.decode.workers, torch_device, model=run.model),
               "constrain": constrain, "quantize": quantize, "runtime": runtime}
    atomic_write_text(run_dir / f"{name}.json", json.dumps(summary, indent=2))
    return report
