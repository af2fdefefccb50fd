"""Command line: thin wrappers, one subcommand = one library function.

    seq2seq train    [CONFIG] [--preset P] [--data DIR | --shards DIR] [--set key=value ...] [--nproc N] --out RUN
    seq2seq preprocess [CONFIG] [--data DIR] [--size N] --out DIR   (memory-mapped training shards)
    seq2seq generate RUN ["text" | --file F | < stdin]
    seq2seq evaluate RUN [--split test]
    seq2seq compare  [--task NAME] [--presets rnn,lstm,...] [--out DIR] [--quick]
    seq2seq serve    RUN [RUN ...] [--host H] [--port P]
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from seq2seq import __version__
from seq2seq.checkpoint import CHECKPOINTS, RunDirError
from seq2seq.config import PRESETS, ConfigError, RunConfig, build_config, deep_merge, load_config_file
from seq2seq.cpu_memory import keep_freed_memory
from seq2seq.data.example import DataError, DataFolderNotFound
from seq2seq.data.named_tasks import TASKS, task_config
from seq2seq.serving.cli import add_serve_command
from seq2seq.translator import InputError

logger = logging.getLogger("seq2seq")

# Errors caused by what the user gave us: reported in one line, without a traceback.
USER_ERRORS = (ConfigError, DataError, RunDirError, InputError, OSError, ValueError)

QUICK_OVERRIDES = [
    "data.builtin_train_size=600",
    "model.encoder.embedding_size=32",
    "model.encoder.hidden_size=64",
    "model.decoder.embedding_size=32",
    "model.decoder.hidden_size=64",
    "model.decoder.attention_size=64",
    "model.transformer.d_model=64",  # read by a transformer model only (d_k 16 with the preset's 4 heads)
    "model.transformer.ffn_size=256",
    "model.transformer.encoder_layers=2",
    "model.transformer.decoder_layers=2",
    "train.epochs=2",
    "train.batch_size=32",
    "decode.max_len=60",
]


def infer_data_format(path: Path) -> str:
    """Guess ``data.format`` from the files in a data folder."""
    if not path.exists():
        raise DataFolderNotFound(f"{path}: data folder not found")
    if path.is_file():
        raise DataError(f"{path}: --data expects a folder (e.g. ../shared/data/conala), got a file")
    names = {p.name for p in path.iterdir()}
    if {"train.json", "test.json"} <= names and "train.jsonl" not in names:
        return "conala"
    if {"all.anno", "all.code"} <= names:
        return "django"
    if any(n.startswith("train.") and n.endswith(".tsv") for n in names):
        return "tsv"
    if "train.json" in names or "train.jsonl" in names:
        return "json"
    if any(n.startswith("train.") for n in names):
        return "parallel"
    raise DataError(f"{path}: cannot tell the data format from its files {sorted(names)}; set data.format")


def _config_sources(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The config file's tree and the ordered overrides (--quick, --data, --set) from the arguments."""
    base = load_config_file(Path(args.config)) if getattr(args, "config", None) else {}
    overrides = list(QUICK_OVERRIDES) if getattr(args, "quick", False) else []
    if getattr(args, "task", None):
        # The task's reader, tokenizers and limits under the config file's own settings;
        # --data only moves the folder (the format is the task's, not inferred).
        file_data = base.get("data") if isinstance(base.get("data"), dict) else {}  # a wrong type: build_config says so
        folder = args.data or (file_data.get("path") if args.task != "builtin" else None)  # --data, else the file's path
        merged = deep_merge(task_config(args.task, None if folder is None else str(folder)), base)
        if args.data and isinstance(merged.get("data"), dict):
            merged["data"]["path"] = str(Path(args.data))
        return merged, overrides + list(getattr(args, "set", None) or [])
    if getattr(args, "data", None):
        # Set directly, not as a "key=value" override: a folder named 2024 or null must stay a string.
        data_path = Path(args.data)
        data = dict(base.get("data") or {})
        data.update(path=str(data_path), format=infer_data_format(data_path))
        base = {**base, "data": data}
    overrides += list(getattr(args, "set", None) or [])
    return base, overrides


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    base, overrides = _config_sources(args)
    if getattr(args, "shards", None):  # train --shards DIR: the data settings that made the shards
        from seq2seq.data.shards import read_manifest

        if args.data or args.task:
            raise ConfigError("--shards brings its own data settings; remove --data/--task")
        base = {**base, "data": {**read_manifest(Path(args.shards))["data"], "shards": str(args.shards)}}
    if getattr(args, "size", None):
        overrides = [*overrides, f"data.builtin_train_size={args.size}"]
    return build_config(base=base, preset=getattr(args, "preset", None), overrides=overrides, source=args.config or "config")


# ---------------------------------------------------------------------------- subcommands
def cmd_preprocess(args: argparse.Namespace) -> int:
    from seq2seq.preprocess import preprocess

    outcome = preprocess(_config_from_args(args), Path(args.out), shard_size=args.shard_size)
    counts = ", ".join(f"{split} {n}" for split, n in outcome.pairs.items())
    print(f"shards: {outcome.manifest.parent}  {outcome.shards} shard(s)  pairs: {counts}")
    return 0


def _launch_torchrun(args: argparse.Namespace) -> int:
    """``seq2seq train --nproc N ...``: the same command under ``torchrun --standalone --nproc-per-node N``,
    whose elastic agent runs here and starts the N training processes (``torch.distributed.run``)."""
    import os

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc starts torchrun itself; under torchrun leave it out")
    argv, skip = [], False
    for arg in args.argv:  # the command without --nproc N
        if not skip and arg == "--nproc":
            skip = True
        elif not skip and not arg.startswith("--nproc="):
            argv.append(arg)
        else:
            skip = False
    command = ["--standalone", f"--nproc-per-node={args.nproc}", "-m", "seq2seq", *argv]
    logger.info("torchrun %s", shlex.join(command))
    try:
        torchrun(command)
    except ChildFailedError as error:
        codes = sorted({failure.exitcode for failure in error.failures.values()})
        print(f"seq2seq train: error: a training process of {args.nproc} failed (exit code {', '.join(map(str, codes))}, "
              "the first error above is the cause); after a crash, completed epochs are saved: seq2seq train --resume RUN --nproc N",
              file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from seq2seq.pipeline import train
    from seq2seq.progress import TqdmProgress
    from seq2seq.training.distributed import launched_rank

    if args.nproc:
        return _launch_torchrun(args)
    rank = launched_rank()  # under torchrun, rank 0 alone reports
    if rank:
        logging.getLogger("seq2seq").setLevel(logging.WARNING)
    if args.resume:
        from seq2seq.checkpoint import load_run_config

        ignored = [flag for flag, given in (("CONFIG", args.config), ("--preset", args.preset), ("--task", args.task), ("--data", args.data),
                                            ("--quick", args.quick), ("--overwrite", args.overwrite)) if given]
        if ignored:
            raise ConfigError(f"--resume continues a run with its saved configuration; remove {', '.join(ignored)} "
                              "(only --set train.epochs=N and other budget keys may change)")
        run_dir = Path(args.resume)
        saved = load_run_config(run_dir).model_dump(mode="json")
        from seq2seq.pipeline import RESUMABLE_KEYS

        # refused before the config is built: another model.architecture would first fail on unrelated keys
        fixed = [item.split("=", 1)[0].strip() for item in args.set or []
                 if item.split("=", 1)[0].strip() not in {f"train.{key}" for key in RESUMABLE_KEYS}]
        if fixed:
            raise ConfigError(f"--resume cannot change {', '.join(fixed)}: {run_dir} continues its saved "
                              f"{saved['model']['architecture']} model and configuration; only "
                              f"{', '.join(f'train.{key}' for key in RESUMABLE_KEYS)} may change (train a new run with --out)")
        # On resume only the budget (train.epochs, train.time_budget_s, train.max_steps) may change.
        config = build_config(base=saved, overrides=list(args.set or []), source=str(run_dir / "config.yaml"))
    else:
        config = _config_from_args(args)
        run_dir = Path(args.out)
    with TqdmProgress(desc="train", disable=args.no_progress) as progress:
        outcome = train(config, run_dir, resume=bool(args.resume), overwrite=args.overwrite, on_batch=progress.update)
    if rank:
        return 0
    result = outcome.result
    print(f"run: {run_dir}  parameters: {outcome.parameters:,}  best valid loss: {result.best_valid_loss:.4f}  "
          f"stopped: {result.stop_message}")
    if not args.no_eval:
        from seq2seq.pipeline import evaluate_run

        split = "test" if outcome.corpus.encoded.get("test") else "valid"
        report = evaluate_run(run_dir, split=split, device=config.train.device, corpus=outcome.corpus)
        print(_report_line(split, report))
    return 0


def _report_line(split: str, report) -> str:
    parse = f"  parse rate {report.parse_rate:.1%}" if report.parse_rate is not None else ""
    if getattr(report, "completed", 0):  # grammar: outputs the search could not finish within max_len
        parse += f" ({report.completed} unfinished outputs closed or shortened)"
    line = (
        f"{split}: {report.count} examples  exact match {report.exact_match:.1%}  token BLEU {report.bleu:.2f}"
        f"{parse}  perplexity {report.perplexity:.2f}"
    )
    task = report.task
    if task.get("metric") == "conala":
        line += f"\n  official CoNaLa BLEU {task['conala_bleu']:.2f}  exact match {task['conala_exact_match']:.1%}"
    elif task.get("metric") == "sacrebleu":
        line += f"\n  sacreBLEU {task['sacrebleu']:.2f}  ({task['signature']})"
    elif task.get("metric") == "accuracy":
        line += f"\n  accuracy {task['accuracy']:.1%}  confusion (gold -> predicted): {task['confusion']}"
    if task.get("metric") != "accuracy":  # a label is one token
        line += f"\n  output/reference length {report.length_ratio:.3f}  outputs stopped at max_len {report.stopped_at_max_len}"
    if report.coverage:
        line += (f"\n  outputs repeating an n-gram (2-4) more than the reference {report.coverage['repeated_ngrams']:.1%}"
                 f"  source tokens never attended above 0.1 {report.coverage['unattended_source']:.1%}")
    return line


def cmd_generate(args: argparse.Namespace) -> int:
    from seq2seq.translator import Translator

    if args.text is not None and args.file is not None:
        raise InputError("give either a text argument or --file, not both")
    if args.text is not None:
        lines = [_text_argument(args.text)]
    else:
        lines = _read_input_lines(args.file)
        if not any(line.strip() for line in lines):
            raise InputError(f"{args.file or 'stdin'}: no input lines")
    translator = Translator.from_run_dir(Path(args.run), which=args.checkpoint, device=args.device, quantize=args.quantize,
                                         ensemble=[Path(run) for run in args.ensemble or ()],
                                         runtime=args.runtime)
    # Blank input lines give blank output lines, so output line N always answers input line N.
    wanted = [i for i, line in enumerate(lines) if line.strip() or args.text is not None]
    if args.sample and (args.beam > 1 or args.nbest > 1):
        raise InputError("--sample draws one output per input: it cannot be combined with --beam or --nbest")
    found = translator.generate_nbest(
        [lines[i] for i in wanted], max_len=args.max_len, beam_size=args.beam, nbest=args.nbest,
        length_penalty=args.length_penalty, alpha=args.alpha, constrain=args.constrain, sample=args.sample,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        heads=bool(args.plot_attention),  # a multi-head model's plot shows each head
        no_repeat_ngram_size=args.no_repeat_ngram_size,
    )
    generations = dict(zip(wanted, found))
    if args.plot_attention:
        _plot_attention(found[0][0], Path(args.plot_attention))
    if args.plot_probs:
        _plot_probabilities(translator, found[0][0], Path(args.plot_probs), step=args.plot_step)
    if args.plot_nbest:
        _plot_nbest(found[0], Path(args.plot_nbest))
    for index in range(len(lines)):
        alternatives = generations.get(index)
        if alternatives is None:
            print()
            continue
        for rank, generation in enumerate(alternatives, start=1):
            line = generation.text.replace("\n", "\\n")
            if args.scores or args.nbest > 1:
                badge = "" if generation.parses is None else ("\tparses" if generation.parses else "\tsyntax-error")
                line = f"{line}\t{generation.normalized_score:.4f}{badge}"
            if args.nbest > 1:
                line = f"{index + 1}\t{rank}\t{line}"
            print(line)
    return 0


def _save_figure(figure, path: Path, what: str) -> None:
    """Write a matplotlib figure atomically (the format follows the file suffix, PNG by default)."""
    import matplotlib.pyplot as plt

    from seq2seq.run_files import atomic_write

    try:
        atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(figure)
    print(f"{what} written to {path}", file=sys.stderr)


def _output_tokens(generation) -> list[str]:
    return generation.tokens + (["<eos>"] if generation.finished else [])


def _plot_attention(generation, path: Path) -> None:
    """Heatmap of the first input's best output (source tokens x output tokens)."""
    from seq2seq.visualization.attention import attention_heatmap

    if generation.attention is None:
        raise InputError("--plot-attention: this model has no attention to plot")
    out_tokens = _output_tokens(generation)
    if generation.heads is not None:  # multi-head attention: each head and their mean
        from seq2seq.visualization.attention import head_heatmaps

        figure = head_heatmaps(generation.heads.numpy()[:, : len(out_tokens)], generation.source_tokens, out_tokens,
                               title=generation.text)
    else:
        figure = attention_heatmap(generation.attention.numpy()[: len(out_tokens)], generation.source_tokens,
                                   out_tokens, title=generation.text)
    _save_figure(figure, path, "attention heatmap")


def _plot_probabilities(translator, generation, path: Path, *, step: int) -> None:
    """Bar chart of the top next-token candidates at output step ``step`` (1-based) of the first input."""
    from seq2seq.visualization.probabilities import next_token_chart

    out_tokens = _output_tokens(generation)
    if not 1 <= step <= len(out_tokens):
        raise InputError(f"--plot-step {step}: the output has {len(out_tokens)} steps ({' '.join(out_tokens)})")
    probabilities = translator.step_probabilities(generation)[step - 1].numpy()
    vocab = translator.run.tgt_vocab
    # A copy model's distribution extends past the vocabulary with this source's unknown words.
    oovs = vocab.encode_copy_source(generation.source_tokens)[1] if translator.run.model.copies else ()
    labels = [*vocab.itos, *oovs]
    chosen = labels.index(out_tokens[step - 1]) if out_tokens[step - 1] in labels else None
    prefix = " ".join(out_tokens[: step - 1]) or "<sos>"
    figure = next_token_chart(probabilities, labels, chosen=chosen, k=10,
                              title=f"step {step}, after: {prefix[-60:]}")
    _save_figure(figure, path, "next-token probabilities")


def _plot_nbest(generations, path: Path) -> None:
    """Bar chart of the first input's n-best outputs and their scores."""
    from seq2seq.visualization.probabilities import nbest_chart

    marks = [] if generations[0].parses is None else ["parses" if g.parses else "syntax error" for g in generations]
    figure = nbest_chart([g.text.replace("\n", " ⏎ ") for g in generations], [g.normalized_score for g in generations],
                         marks=marks, title=generations[0].source)
    _save_figure(figure, path, "n-best chart")


def _text_argument(text: str) -> str:
    """The TEXT argument, refused in one line when it holds a surrogate: bytes that were not UTF-8
    reach Python as U+DC80..U+DCFF (PEP 383), so the message names them as bytes."""
    from seq2seq.data.valid_text import check_text

    for position, char in enumerate(text):
        if "\udc80" <= char <= "\udcff":
            raise InputError(f"the text argument is not valid UTF-8 (byte 0x{ord(char) - 0xdc00:02x} at character "
                             f"{position + 1}): expected UTF-8 text")
    return check_text(text, what="the text argument", error=InputError)


def _read_input_lines(file: str | None) -> list[str]:
    """Lines of --file (or stdin), with ``file:line`` errors for undecodable text."""
    name = "stdin" if file in (None, "-") else file
    raw = sys.stdin.buffer.read() if name == "stdin" else Path(file).read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    decoded = []
    for number, line in enumerate(lines, start=1):
        try:
            decoded.append(line.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise InputError(f"{name}:{number}: not valid UTF-8 text ({error.reason} at byte {error.start})") from None
    return decoded


QUANTIZE_HELP = "decode with int8 weights (dynamic quantization; CPU only, about 2x faster, see docs/BENCHMARKS.md)"
CHECKPOINT_HELP = "weights to use: best (lowest validation loss), last, or averaged (written by seq2seq average)"
ENSEMBLE_HELP = ("decode with this run's model too (repeatable): the ensemble predicts the mean of the models' "
                 "distributions; the runs must share vocabularies and tokenizers")
CONSTRAINTS = ["grammar", "python", "none"]
CONSTRAIN_HELP = ("Python outputs. grammar: keep only prefixes that Python's parser can complete, so every finished "
                  "output parses; python: only prune prefixes whose brackets cannot balance; none: no constraint. "
                  "With --beam, outputs that parse are preferred. Default: the run's decode.constrain")
RUNTIME_HELP = "onnx: decode with the run's ONNX export (seq2seq export RUN) through onnxruntime, on the CPU"
NO_REPEAT_HELP = ("no n-gram of N tokens may occur twice in an output (a guard against runaway loops; greedy then "
                  "runs as a beam of one); 0 = off. Default: the run's decode.no_repeat_ngram_size")


def _int_at_least(low: int, expected: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``, else an error that says ``expected`` and the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


_natural_int = _int_at_least(0, "0 or a positive integer")
_positive_int = _int_at_least(1, "a positive integer")


def _non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (a length penalty's exponent)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


LENGTH_PENALTY_HELP = ("how beam search ranks finished outputs of different lengths: none (sums of log-probabilities), "
                       "gnmt (divided by ((5+len)/6)^alpha, Wu et al. 2016) or average (divided by len^alpha). "
                       "Default: the run's decode.length_penalty (none with --runtime ctranslate2, which has no penalty)")
ALPHA_HELP = "the length penalty's exponent (>= 0). Default: the run's decode.alpha (0.6 unless set)"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from seq2seq.pipeline import evaluate_run

    report = evaluate_run(Path(args.run), split=args.split, which=args.checkpoint, device=args.device,
                          output=Path(args.output) if args.output else None, beam_size=args.beam,
                          constrain=args.constrain, quantize=args.quantize, runtime=args.runtime,
                          ensemble=[Path(run) for run in args.ensemble or ()], batch_size=args.batch_size,
                          workers=args.workers, no_repeat_ngram_size=args.no_repeat_ngram_size,
                          length_penalty=args.length_penalty, alpha=args.alpha)
    decoding = f"beam {args.beam}" if args.beam > 1 else "greedy"
    decoding += f", {report.length_penalty} length penalty {report.alpha:g}" if report.length_penalty != "none" else ""
    decoding += f", {report.constraint} constraint" if report.constraint else ""
    decoding += f", no repeated {report.no_repeat_ngram_size}-grams" if report.no_repeat_ngram_size else ""
    print(_report_line(args.split, report) + f"  ({decoding})")
    for bucket in report.by_length:
        print(f"  source length {bucket.label:>6}: {bucket.count:5d} examples  exact match {bucket.exact_match:.1%}  BLEU {bucket.bleu:.2f}")
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    from seq2seq.rerank import rerank_run

    constrain = None if args.constrain in (None, "none") else args.constrain
    report = rerank_run(Path(args.run), [Path(run) for run in args.reverse], split=args.split, tune_split=args.tune_split,
                        ensemble=[Path(run) for run in args.ensemble or ()],
                        beam_size=args.beam, constrain=constrain, device=args.device,
                        output=Path(args.output) if args.output else None)
    print(f"n-best reranking, beam {report.beam_size}{f', {constrain} constraint' if constrain else ''}: "
          f"weights tuned on {args.tune_split}, {report.metric}")
    print(report.table(tune_split=args.tune_split, split=args.split))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from seq2seq.export import export_run

    folder = export_run(Path(args.run), which=args.checkpoint, fmt=args.format)
    if args.format == "ctranslate2":
        print(f"wrote {folder}/ (model.bin, vocabularies, ctranslate2.json)")
        print(f"decode with it: seq2seq generate {args.run} --runtime ctranslate2 \"TEXT\"")
        return 0
    print(f"wrote {folder / 'encoder.onnx'}, {folder / 'decoder_step.onnx'} and {folder / 'onnx.json'}")
    print(f"decode with it: seq2seq generate {args.run} --runtime onnx \"TEXT\"  (or seq2seq evaluate {args.run} --runtime onnx)")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from seq2seq.training.averaging import average_run

    epochs = _epoch_list(args.epochs) if args.epochs else None
    path, chosen = average_run(Path(args.run), last=args.last, epochs=epochs)
    print(f"wrote {path}: the mean of the weights of epochs {', '.join(map(str, chosen))}")
    print(f"evaluate it: seq2seq evaluate {args.run} --checkpoint averaged")
    return 0


def _epoch_list(text: str) -> list[int]:
    try:
        epochs = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--epochs {text!r}: expected comma-separated epoch numbers, e.g. 6,7,8") from None
    if not epochs or min(epochs) < 1:
        raise ConfigError(f"--epochs {text!r}: expected comma-separated epoch numbers from 1, e.g. 6,7,8")
    return epochs


def cmd_compare(args: argparse.Namespace) -> int:
    from seq2seq.compare import run_comparison

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    if not presets:
        raise ConfigError(f"--presets {args.presets!r}: expected a comma-separated list, e.g. rnn,lstm,lstm-attention")
    for preset in presets:
        if preset not in PRESETS:
            raise ConfigError(f"--presets: unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    base, overrides = _config_sources(args)
    comparison = run_comparison(
        base, overrides, presets=presets, out_dir=Path(args.out), overwrite=args.overwrite, resume=args.resume, seeds=args.seeds, jobs=args.jobs, defaults=True,
        show_progress=not args.no_progress, command="seq2seq " + " ".join(shlex.quote(a) for a in args.argv),
    )
    print(comparison.table_markdown())
    print(f"\nwrote {Path(args.out) / 'comparison.md'}, comparison.html, results.json and figures in {args.out}")
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a shortened option (--seed for --seeds) would break when another option shares
    # its prefix, and would hide a renamed option from tests/test_docs_commands.py
    parser = argparse.ArgumentParser(prog="seq2seq", description="Recurrent sequence-to-sequence models: NL -> Python code and more.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"seq2seq {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", nargs="?", help="YAML config file (optional; defaults + preset otherwise)")
        p.add_argument("--preset", help=f"model preset: {', '.join(PRESETS)}")
        p.add_argument("--task", choices=list(TASKS), help="a named task: its reader, tokenizers and limits, its data "
                       "from ../shared/data/<task> ($SEQ2SEQ_DATA/<task>, or --data). Default: builtin, the generated NL -> Python task")
        p.add_argument("--data", help="data folder; format inferred (conala, django, parallel, tsv, json) unless --task names it. "
                       "Default: the built-in NL -> Python task")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. --set train.epochs=5 (repeatable)")
        p.add_argument("--quick", action="store_true", help="tiny data and model, 2 epochs: a smoke test in seconds")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("train", allow_abbrev=False, help="train a model into a run directory")
    add_config_args(p)
    p.add_argument("--out", default="runs/latest", help="run directory to create (default: runs/latest)")
    p.add_argument("--resume", metavar="RUN", help="continue a run from its last completed epoch")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation after training")
    p.add_argument("--nproc", type=_positive_int, metavar="N",
                   help="train data-parallel in N processes on this machine (starts torchrun --standalone --nproc-per-node N)")
    p.add_argument("--shards", metavar="DIR", help="stream the training pairs from a `seq2seq preprocess` folder "
                   "(its data settings and vocabularies; sets data.shards)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("preprocess", allow_abbrev=False, help="tokenize and numericalize a corpus into memory-mapped shards for training")
    add_config_args(p)
    p.add_argument("--out", required=True, help="folder to write the shards and their manifest to")
    p.add_argument("--size", type=_positive_int, metavar="N", help="built-in task: N training pairs (data.builtin_train_size)")
    p.add_argument("--shard-size", type=_positive_int, default=100_000, metavar="N", help="pairs per shard (default 100000)")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("generate", allow_abbrev=False, help="generate output for a text argument, a file or stdin")
    p.add_argument("run", help="run directory")
    p.add_argument("text", nargs="?", help="source text (omit to read lines from --file or stdin)")
    p.add_argument("--file", help="file with one source per line ('-' for stdin)")
    p.add_argument("--max-len", type=_positive_int, default=None, help="maximum output tokens")
    p.add_argument("--scores", action="store_true", help="also print the log-probability and whether the code parses")
    p.add_argument("--beam", type=_positive_int, default=1, help="beam size (1 = greedy, the default)")
    p.add_argument("--nbest", type=_positive_int, default=1,
                   help="outputs per input, printed as INPUT_NO<TAB>RANK<TAB>TEXT<TAB>SCORE (needs --beam >= nbest)")
    p.add_argument("--length-penalty", choices=["none", "gnmt", "average"], help=LENGTH_PENALTY_HELP)
    p.add_argument("--alpha", type=_non_negative_float, help=ALPHA_HELP)
    p.add_argument("--constrain", choices=CONSTRAINTS, help=CONSTRAIN_HELP)
    p.add_argument("--no-repeat-ngram-size", type=_natural_int, metavar="N", help=NO_REPEAT_HELP)
    p.add_argument("--sample", action="store_true", help="sample the output instead of searching for the most probable one")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (> 0; below 1 sharpens)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most probable tokens only (0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: smallest token set with this probability")
    p.add_argument("--seed", type=int, default=None, help="seed for --sample (reproducible draws)")
    p.add_argument("--plot-attention", metavar="PNG", help="save the attention heatmap of the first input's output")
    p.add_argument("--plot-probs", metavar="PNG", help="save a bar chart of the top-10 next-token candidates at --plot-step")
    p.add_argument("--plot-step", type=_positive_int, default=1, help="output step for --plot-probs (1 = first token)")
    p.add_argument("--plot-nbest", metavar="PNG", help="save a bar chart of the first input's n-best outputs and scores")
    p.add_argument("--checkpoint", choices=list(CHECKPOINTS), default="best", help=CHECKPOINT_HELP)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quantize", choices=["int8"], help=QUANTIZE_HELP)
    p.add_argument("--runtime", choices=["torch", "onnx", "ctranslate2"], default="torch",
                   help=RUNTIME_HELP + "; ctranslate2: with its CTranslate2 export (export --format ctranslate2), greedy or beam")
    p.add_argument("--ensemble", action="append", metavar="RUN", help=ENSEMBLE_HELP)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", allow_abbrev=False, help="score a run on a split of its data")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--output", help="write the predictions here, one per line")
    p.add_argument("--beam", type=_positive_int, default=1, help="beam size (1 = greedy, the default)")
    p.add_argument("--batch-size", type=_positive_int,
                   help="sentences per decoding batch (default: the run's decode.batch_size)")
    p.add_argument("--workers", type=_positive_int,
                   help="batches decoded at once, sharing torch's threads (default: the run's decode.workers; "
                        "0 there means 2 on a CPU with at least 2 threads, else 1)")
    p.add_argument("--constrain", choices=CONSTRAINTS, help=CONSTRAIN_HELP)
    p.add_argument("--no-repeat-ngram-size", type=_natural_int, metavar="N", help=NO_REPEAT_HELP)
    p.add_argument("--length-penalty", choices=["none", "gnmt", "average"], help=LENGTH_PENALTY_HELP)
    p.add_argument("--alpha", type=_non_negative_float, help=ALPHA_HELP)
    p.add_argument("--checkpoint", choices=list(CHECKPOINTS), default="best", help=CHECKPOINT_HELP)
    p.add_argument("--device", default="auto")
    p.add_argument("--quantize", choices=["int8"], help=QUANTIZE_HELP)
    p.add_argument("--runtime", choices=["torch", "onnx", "ctranslate2"], default="torch",
                   help=RUNTIME_HELP + "; ctranslate2: with its CTranslate2 export (transformer runs; --quantize int8 "
                   "decodes in CTranslate2's int8), greedy or beam")
    p.add_argument("--ensemble", action="append", metavar="RUN", help=ENSEMBLE_HELP)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", allow_abbrev=False,
        help="train rnn, lstm and lstm-attention with equal budgets and compare them",
        description="Train several presets on the same data with equal budgets and write a comparison report. "
        "Default budget (change with --set): embeddings 64, hidden 128, Adam lr 3e-3, 4 epochs per model (3-8 minutes in all on 2 idle cores, by machine).",
    )
    add_config_args(p)
    p.add_argument("--presets", default="rnn,lstm,lstm-attention", help="comma-separated presets to compare")
    p.add_argument("--out", default="comparison", help="output folder (default: comparison)")
    p.add_argument("--seeds", type=_positive_int, default=1,
                   help="train each preset with this many seeds (train.seed, +1, ...); the table gives mean ± sd")
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="train this many runs at a time, each in a process of its own with train.threads = torch's "
                   "threads / JOBS unless --set train.threads is given (on a 2-core CPU, --jobs 2 finishes sooner)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="replace runs already in --out")
    again.add_argument("--resume", action="store_true",
                       help="continue the runs already in --out where they stopped (a finished run is evaluated, not "
                       "retrained; its settings must be the same): finish an interrupted comparison, or add presets to one")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("rerank", allow_abbrev=False, help="rerank a run's n-best lists with a reverse (output -> input) model, "
                       "weights tuned on the validation split (Yin & Neubig 2019)")
    p.add_argument("run", help="run directory (the forward model)")
    p.add_argument("--reverse", required=True, action="append", metavar="RUN",
                   help="a run of the same data trained with data.reverse: true (repeatable: the reconstruction "
                        "feature is the mean of their scores)")
    p.add_argument("--split", choices=["valid", "test"], default="test", help="the split to report (default: test)")
    p.add_argument("--tune-split", choices=["train", "valid"], default="valid", help="the split the weights are tuned on")
    p.add_argument("--beam", type=_positive_int, default=5, help="beam size = n-best list size (default: 5)")
    p.add_argument("--constrain", choices=CONSTRAINTS, help="decode the n-best lists with this constraint (default: none)")
    p.add_argument("--output", help="write the reranked predictions of --split here, one per line")
    p.add_argument("--ensemble", action="append", metavar="RUN",
                   help="decode the n-best lists with this forward run too (repeatable), as evaluate --ensemble")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_rerank)

    p = sub.add_parser("export", allow_abbrev=False, help="export a run's model for another runtime (ONNX: encoder + decoder step)")
    p.add_argument("run", help="run directory")
    p.add_argument("--format", choices=["onnx", "ctranslate2"], default="onnx",
                   help="onnx: encoder + decoder-step graphs (every architecture); ctranslate2: a CTranslate2 model (transformer runs)")
    p.add_argument("--checkpoint", choices=list(CHECKPOINTS), default="best", help=CHECKPOINT_HELP)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("average", allow_abbrev=False, help="average the weights of a run's last epochs into averaged.safetensors")
    p.add_argument("run", help="run directory (trained with train.keep_epoch_checkpoints > 0)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--last", type=_positive_int, help="average the last N kept epochs (default: all kept)")
    group.add_argument("--epochs", help="average these epochs, e.g. 6,7,8")
    p.set_defaults(func=cmd_average)

    add_serve_command(sub)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line as :func:`main` reads it (argparse's own error and exit status 2 if it cannot)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse binds an optional positional (generate's TEXT) as soon as an option follows RUN, so
    # `generate RUN --beam 5 "text"` would leave "text" over: give it to TEXT.
    if getattr(args, "text", "") is None and len(extra) == 1 and not extra[0].startswith("-"):
        args.text, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = list(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        keep_freed_memory()  # process-wide, so the command line decides (seq2seq.cpu_memory)
        return args.func(args)
    except USER_ERRORS as error:
        if args.verbose:
            raise
        print(f"seq2seq {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seq2seq {args.command}: interrupted; completed epochs are saved (resume with --resume)", file=sys.stderr)
        return 130
