"""Training and decoding speed against the peers: Joey NMT 2.3.0 and OpenNMT-py 3.5.1 on Multi30k de->en.

    python bench/peers.py [--peers ours,joey,opennmt] [--model rnn|transformer] [--train-seconds 300] [--rounds 1]
                          [--quality-minutes 0] [--decode-batches 64,1] [--work DIR] [--data DIR] [--json out.json]
                          [--setup-only] [--report out.json] [--decode-only --json out.json]

Each system trains the same model setting, OpenNMT-py's RNN baseline (configs/multi30k/
bigru-attention.yaml for ours, bench/peers/joey.yaml and bench/peers/opennmt.yaml for the
peers): a bidirectional GRU encoder 256 per direction, a GRU decoder 512 with Bahdanau (MLP)
attention and input feeding, embeddings 500, dropout 0.3, label smoothing 0.1, Adam 1e-3,
batches of 128 sentences, gradient norm 1.0. The models are close, not identical (all three attend
after the GRU step and feed the attentional vector back; ours maps the encoder's final state to the
decoder's first state through a learned tanh layer and has no bias in its attention score), so the
table prints each one's parameter count.

``--model transformer`` trains the Transformer instead, ours (configs/multi30k/transformer.yaml)
against OpenNMT-py's (bench/peers/opennmt-transformer.yaml): d_model 256, 3 + 3 pre-norm layers,
4 heads, FFN 1024, dropout 0.2, sinusoidal positions, tied output layer, label smoothing 0.1,
Adam (0.9, 0.98) with 800 warm-up steps, batches of 128 sentences. Joey NMT takes part in the RNN
comparison only.

The systems run one at a time, each with 2 torch threads, for ``--train-seconds`` of training
(timed from the peer's "training starts" log line; ours has its own train.time_budget_s). The
result is target tokens per second over a steady window, from each system's own log: the first
reading and any that start within the first 10% of the logged time are dropped. All three
count the non-padding target tokens, <eos> included. Ratios, not seconds, are the result: the
machine is shared and noisy, and the peers run their own torch builds (printed).

``--rounds N`` runs the speed windows in N interleaved rounds: every system of ``--peers`` once per
round, in order (ours, OpenNMT-py, ours, OpenNMT-py, ...), so that the machine's drift over the run
falls on both sides of each ratio. The report gives every window, ours over each peer within each
round (the paired ratio), and the median and range of those ratios; the main table's
"ours / system" is then that median. The quality runs (if any) come after all rounds, a peer's step
budget from its median window. A system that fails in one round is left out of the later ones and
of the quality runs.

``--quality-minutes M`` also trains each system for M minutes (the peers, which keep no checkpoint
when stopped on a clock, get the steps their speed run would do in M minutes) and decodes test2016
greedily and with beam 5 (batches of 64 and of 1 sentence, ``--decode-batches``; at most 60 tokens,
no length penalty), ours also with int8 weights (``--quantize int8``); every output is
Moses-detokenized and scored here with sacreBLEU (13a, lower-cased) against the raw references.
``--decode-only --json RECORD`` decodes again with the models an earlier quality run left in
``--work`` (e.g. at other batch sizes) and adds the results to RECORD.

Setup is idempotent and lives in ``--work`` (default ~/.cache/seq2seq-bench; a .seq2seq-bench/
inside the repo is git-ignored): one venv per peer, installed from PyPI, and the Moses-tokenized,
lower-cased data (training pairs of at most 50 tokens a side), the preprocessing ours does
inside. OpenNMT-py pins torch<2.3 (CUDA wheels, about 3 GB); when it cannot be installed it is
skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "bench" / "peers"
# --model: each system's configuration of that model (ours: a recipe of configs/; a peer: a template
# of bench/peers/ whose paths and budget the bench fills in). Joey NMT takes part in the RNN only.
MODELS = {
    "rnn": {"ours": REPO / "configs" / "multi30k" / "bigru-attention.yaml", "joey": TEMPLATES / "joey.yaml",
            "opennmt": TEMPLATES / "opennmt.yaml"},
    "transformer": {"ours": REPO / "configs" / "multi30k" / "transformer.yaml",
                    "opennmt": TEMPLATES / "opennmt-transformer.yaml"},
}
SPLITS = ("train", "valid", "test2016")
MAX_LEN = 50  # tokens a side, training pairs only (ours: data.max_src_len / max_tgt_len)
WARMUP_FRACTION = 0.1
DECODINGS = (("greedy", 1), ("beam 5", 5))
DECODE_BATCH, DECODE_MAX_LEN = 64, 60
POLL_S, STOP_GRACE_S = 0.5, 120
DATA_STAMP = f"sacremoses MosesTokenizer(escape=False, aggressive_dash_splits=False), lowercase first, train <= {MAX_LEN}\n"


# ---------------------------------------------------------------------------------------------
# Setup: venvs and data
# ---------------------------------------------------------------------------------------------

def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def ensure_venv(venv: Path, steps: list[list[str]], *, log: Path, optional_first: list[str] | None = None) -> bool:
    """Create ``venv`` and pip-install ``steps`` in order, once (a stamp records what was installed).
    ``optional_first`` is tried before them and may fail. False when an install step fails."""
    stamp = venv / "seq2seq-bench-installed"
    wanted = json.dumps(steps)
    if stamp.exists() and stamp.read_text() == wanted:
        return True
    print(f"setting up {venv} (pip output in {log}) ...", file=sys.stderr)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        if subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], stdout=out, stderr=out).returncode:
            return False
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install"]
        if optional_first:
            subprocess.run(pip + optional_first, stdout=out, stderr=out)
        for step in steps:
            out.write(f"\n$ pip install {' '.join(step)}\n")
            out.flush()
            if subprocess.run(pip + step, stdout=out, stderr=out).returncode:
                return False
    stamp.write_text(wanted)
    return True


def read_lines(path: Path) -> list[str]:
    """One entry per line, empty last lines kept: split("\n"), not splitlines(), which would also
    break at a U+2028 inside a sentence and lose the alignment."""
    text = path.read_text(encoding="utf-8")
    return (text[:-1] if text.endswith("\n") else text).split("\n")


def prepare_data(raw: Path, out: Path) -> Path:
    """Moses-tokenize and lower-case every split once, as ours does inside (seq2seq.data.tokenizers.
    MosesTokenizer: lower-case, then tokenize); training pairs over 50 tokens a side are dropped."""
    stamp = out / "READY"
    if stamp.exists() and stamp.read_text() == DATA_STAMP + str(raw):
        return out
    from sacremoses import MosesTokenizer

    print(f"tokenizing {raw} into {out} ...", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    tokenizers = {lang: MosesTokenizer(lang=lang) for lang in ("de", "en")}
    for split in SPLITS:
        sides = {
            lang: [tokenizers[lang].tokenize(line.lower(), escape=False, aggressive_dash_splits=False)
                   for line in read_lines(raw / f"{split}.{lang}")]
            for lang in ("de", "en")
        }
        pairs = list(zip(sides["de"], sides["en"], strict=True))
        if split == "train":
            pairs = [(src, tgt) for src, tgt in pairs if 0 < len(src) <= MAX_LEN and 0 < len(tgt) <= MAX_LEN]
        for index, lang in enumerate(("de", "en")):
            (out / f"{split}.{lang}").write_text("".join(" ".join(pair[index]) + "\n" for pair in pairs), encoding="utf-8")
    stamp.write_text(DATA_STAMP + str(raw))
    return out


# ---------------------------------------------------------------------------------------------
# Running a process: its log, its memory, and stopping it on a clock
# ---------------------------------------------------------------------------------------------

def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                pass
    return found


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class Monitored:
    returncode: int
    wall_seconds: float  # the whole process, start-up and shutdown included
    peak_rss_mb: float  # the process tree, polled every POLL_S, and the main process's VmHWM
    window_seconds: float | None  # from the start marker to the stop signal (or the exit)
    stopped: bool  # SIGINT was sent


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # the group that Popen(start_new_session=True) made for this process
    except ProcessLookupError:
        pass


def run_monitored(command: list[str], *, log: Path, threads: int, cwd: Path | None = None, stdin: Path | None = None,
                  stdout: Path | None = None, start_marker: str | None = None, stop_after: float | None = None,
                  limit: float = 3600) -> Monitored:
    """Run ``command`` (its output to ``log``, or only its stderr where ``stdout`` is given) and
    poll its memory. ``stop_after`` seconds after
    ``start_marker`` first appears in the log it gets SIGINT (the peers have no clock of their own);
    past ``limit`` seconds, or ``STOP_GRACE_S`` after a SIGINT, it is killed."""
    started = time.perf_counter()
    peak_kb, marked_at, stopped_at, seen = 0, None, None, ""
    with (open(log, "wb") as out, open(stdin or os.devnull, "rb") as source, open(log, errors="replace") as reader,
          open(stdout or os.devnull, "wb") as printed):
        process = subprocess.Popen(command, cwd=cwd, stdin=source, stdout=printed if stdout else out,
                                   stderr=out, env=thread_env(threads), start_new_session=True)
        try:
            while process.poll() is None:
                pids = _tree(process.pid)
                peak_kb = max(peak_kb, sum(_status_kb(pid, "VmRSS") for pid in pids), _status_kb(process.pid, "VmHWM"))
                now = time.perf_counter()
                if start_marker and marked_at is None:
                    seen = seen[-len(start_marker):] + reader.read()
                    marked_at = now if start_marker in seen else None
                due = stop_after is not None and marked_at is not None and now - marked_at >= stop_after
                if stopped_at is None and (due or now - started > limit):
                    _signal_group(process.pid, signal.SIGINT)
                    stopped_at = now
                elif stopped_at is not None and now - stopped_at > STOP_GRACE_S:
                    _signal_group(process.pid, signal.SIGKILL)
                time.sleep(POLL_S)
        finally:  # the bench itself interrupted: take the child along
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
    ended = time.perf_counter()
    window = (stopped_at or ended) - marked_at if marked_at is not None else None
    return Monitored(process.returncode, ended - started, peak_kb / 1024, window, stopped_at is not None)


def check(monitored: Monitored, log: Path, what: str, *, stopped_ok: bool = False) -> None:
    """Raise with the end of ``log`` unless the process succeeded (or was stopped on purpose)."""
    if monitored.returncode == 0 or (stopped_ok and monitored.stopped and monitored.window_seconds is not None):
        return
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise RuntimeError(f"{what} failed (exit {monitored.returncode}); the end of {log}:\n{tail}")


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------

@dataclass
class Reading:
    """One report interval of a training log."""

    steps: int
    tokens_per_s: float  # target tokens, <eos> included
    seconds: float


def steady_window(readings: list[Reading]) -> list[Reading]:
    """The readings after warm-up: the first one, and any that start within the first 10% of the
    logged time, are dropped (a window too short for more keeps its last reading)."""
    kept, start, total = [], 0.0, sum(r.seconds for r in readings)
    for index, reading in enumerate(readings):
        if index > 0 and start >= WARMUP_FRACTION * total:
            kept.append(reading)
        start += reading.seconds
    return kept or readings[-1:]


@dataclass
class TrainRun:
    system: str
    parameters: int | None
    readings: list[Reading]
    window_seconds: float | None  # training time: ours' epoch seconds; the peers' start marker to the stop signal
    wall_seconds: float
    peak_rss_mb: float
    tokens_per_s: float = 0.0  # over the steady window: its tokens / its seconds
    steady_readings: int = 0
    steps_per_s: float = 0.0  # over the steady window
    note: str = ""  # printed under the table

    def __post_init__(self) -> None:
        if not self.readings:
            raise RuntimeError(f"{self.system}: no speed reading in its log; train longer (--train-seconds)")
        kept = steady_window(self.readings)
        seconds = sum(r.seconds for r in kept)
        self.tokens_per_s = sum(r.tokens_per_s * r.seconds for r in kept) / seconds
        self.steady_readings = len(kept)
        self.steps_per_s = sum(r.steps for r in kept) / seconds
        if len(self.readings) == 1 and not self.note:
            self.note = f"{self.system}: a single reading, warm-up included; a longer --train-seconds gives a steady one"


@dataclass
class Decoded:
    system: str
    decoding: str
    sentences: int
    seconds: float  # the system's own decoding time (model loading excluded)
    sacrebleu: float
    train_seconds: float | None = None
    weights: str = "fp32"  # ours also decodes with int8 weights (--quantize int8)
    batch: int = DECODE_BATCH  # sentences per batch

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.seconds

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.system, self.decoding, self.weights, self.batch

    def as_record(self) -> dict:
        return {**asdict(self), "sentences_per_s": self.sentences_per_s}


def moses_detokenized(path: Path) -> list[str]:
    from sacremoses import MosesDetokenizer

    detokenizer = MosesDetokenizer(lang="en")
    return [detokenizer.detokenize(line.split(), unescape=False) for line in read_lines(path)]


def corpus_sacrebleu(hypotheses: list[str], references: list[str]) -> float:
    import sacrebleu

    if len(hypotheses) != len(references):
        raise RuntimeError(f"{len(hypotheses)} outputs for {len(references)} references")
    return sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score


def first_int(pattern: str, text: str) -> int | None:
    match = re.search(pattern, text)
    return int(match.group(1)) if match else None


def last_float(pattern: str, text: str, log: Path) -> float:
    found = re.findall(pattern, text)
    if not found:
        raise RuntimeError(f"{log}: no line matching {pattern!r}; has the log format changed?")
    return float(found[-1])


# ---------------------------------------------------------------------------------------------
# The systems: train for a while, report the log's readings; decode test2016
# ---------------------------------------------------------------------------------------------

class System:
    """What the driver needs of a system; the subclasses hold what is particular to each."""

    name = label = dist = ""
    checkpoints_on_stop = True  # False: a quality run needs a step budget instead of a clock

    family = ""  # the key of MODELS[model] that holds this system's configuration

    def __init__(self, *, work: Path, raw: Path, data: Path, threads: int, model: str = "rnn") -> None:
        self.work, self.raw, self.data, self.threads = work, raw, data, threads
        self.config = MODELS[model][self.family]
        self.install_log = work / "logs" / f"install-{self.name}.log"

    @property
    def python(self) -> Path:
        return self.work / "venvs" / self.name / "bin" / "python"

    def setup(self) -> bool:
        return True

    def versions(self) -> dict[str, str]:
        """The package and torch versions of the system's interpreter."""
        code = f"import torch, importlib.metadata as m; print(m.version({self.dist!r})); print(torch.__version__)"
        lines = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True, check=True).stdout.split()
        return {"package": f"{self.dist} {lines[0]}", "torch": lines[1]}

    def train(self, run_dir: Path, *, seconds: float, steps: int | None = None) -> TrainRun:
        raise NotImplementedError

    def decode(self, run_dir: Path, *, beam: int, batch: int = DECODE_BATCH) -> tuple[list[str], float]:
        """Detokenized outputs for test2016 and the decoding seconds the system reports, decoding
        ``batch`` sentences at a time."""
        raise NotImplementedError


class Ours(System):
    name, label, dist, family = "ours", "ours", "seq2seq", "ours"
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE on top of the recipe

    @property
    def python(self) -> Path:
        return Path(sys.executable)

    def train(self, run_dir: Path, *, seconds: float, steps: int | None = None) -> TrainRun:
        command = [
            str(self.python), "-m", "seq2seq", "train", str(self.config), "--set", f"train.time_budget_s={seconds:g}",
            "--set", f"train.threads={self.threads}", "--set", f"data.path={self.raw}",
            *(part for override in self.overrides for part in ("--set", override)),
            "--out", str(run_dir / "run"), "--overwrite", "--no-eval", "--no-progress",
        ]
        log = run_dir / "train.log"
        monitored = run_monitored(command, log=log, threads=self.threads, cwd=REPO, limit=seconds + 1800)
        check(monitored, log, "seq2seq train")
        records = [json.loads(line) for line in read_lines(run_dir / "run" / "metrics.jsonl") if line.strip()]
        readings, previous = [], 0
        for record in records:  # a step record covers the steps since the last one or since its epoch began
            if record.get("kind") == "step":
                rate = record["tgt_tokens_per_s"]
                readings.append(Reading(record["step"] - previous, rate, record["tgt_tokens"] / rate))
            previous = record["step"]
        epochs = [record for record in records if record.get("kind") == "epoch"]
        note = ""
        if not readings and epochs:  # fewer than 50 steps: the epoch record's rate, warm-up included
            readings = [Reading(epochs[-1]["step"], epochs[-1]["train_tokens_per_s"], epochs[-1]["seconds"])]
            note = f"{self.label}: {epochs[-1]['step']} steps, no 50-step record: the whole window's rate, warm-up included"
        parameters = json.loads((run_dir / "run" / "run.json").read_text())["parameters"]
        return TrainRun(self.name, parameters, readings, sum(e["seconds"] for e in epochs), monitored.wall_seconds,
                        monitored.peak_rss_mb, note=note)

    def decode(self, run_dir: Path, *, beam: int, batch: int = DECODE_BATCH,
               quantize: str | None = None) -> tuple[list[str], float]:
        suffix = f"-batch{batch}" + (f"-{quantize}" if quantize else "")
        output, log = run_dir / f"test-beam{beam}{suffix}.txt", run_dir / f"decode-beam{beam}{suffix}.log"
        command = [str(self.python), "-m", "seq2seq", "evaluate", str(run_dir / "run"), "--split", "test",
                   "--beam", str(beam), "--batch-size", str(batch), "--device", "cpu", "--output", str(output)]
        command += ["--quantize", quantize] if quantize else []
        check(run_monitored(command, log=log, threads=self.threads, cwd=REPO), log, "seq2seq evaluate")
        report = "eval_test" + (f"_beam{beam}" if beam > 1 else "") + (f"_{quantize}" if quantize else "")
        report += f"_batch{batch}"
        summary = json.loads((run_dir / "run" / f"{report}.json").read_text())
        return read_lines(output), summary["count"] / summary["decode_sentences_per_s"]


class Joey(System):
    name, label, dist, family = "joey", "Joey NMT", "joeynmt", "joey"
    checkpoints_on_stop = False  # stopped by SIGINT, 2.3.0 left no checkpoint to decode in the 30-minute run

    def setup(self) -> bool:
        # the CPU torch first: an unpinned one would pull gigabytes of CUDA wheels
        steps = [["torch==2.13.0"], ["joeynmt==2.3.0", "importlib-metadata"]]
        return ensure_venv(self.python.parents[1], steps, log=self.install_log)

    def _config(self, run_dir: Path, name: str, steps: int | None = None, **testing: object) -> Path:
        config = yaml.safe_load(self.config.read_text())
        config["model_dir"] = str(run_dir / "model")  # Joey NMT empties it when training starts
        config["data"].update(train=str(self.data / "train"), dev=str(self.data / "valid"), test=str(self.data / "test2016"))
        config["testing"].update(testing)
        if steps is not None:  # a quality run: Joey NMT stops after this many updates and saves latest.ckpt
            config["training"]["updates"] = steps
        path = run_dir / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def train(self, run_dir: Path, *, seconds: float, steps: int | None = None) -> TrainRun:
        command = [str(self.python), "-m", "joeynmt", "train", str(self._config(run_dir, "config.yaml", steps)),
                   "--skip-test"]
        log = run_dir / "train.log"
        monitored = run_monitored(command, log=log, threads=self.threads, start_marker="EPOCH 1",
                                  stop_after=None if steps else seconds, limit=seconds * 3 + 1800)
        check(monitored, log, "joeynmt train", stopped_ok=steps is None)
        text = log.read_text(errors="replace")
        return TrainRun(self.name, first_int(r"Total params: (\d+)", text), self._readings(text),
                        monitored.window_seconds, monitored.wall_seconds, monitored.peak_rss_mb)

    @staticmethod
    def _readings(text: str) -> list[Reading]:
        """A reading per "Tokens per Sec" line; its duration from the log's timestamps, since the last
        such line or since its epoch began (Joey NMT restarts its clock there)."""
        pattern = (r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - INFO - joeynmt\.training - "
                   r"(?:EPOCH \d+|Epoch\s+\d+, Step:\s*(\d+), .*?Tokens per Sec:\s*([\d.]+))")
        readings, previous, since = [], 0, None
        for stamp, step, rate in re.findall(pattern, text):
            at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if step and since is not None:
                readings.append(Reading(int(step) - previous, float(rate), at - since))
                previous = int(step)
            since = at
        return readings

    def decode(self, run_dir: Path, *, beam: int, batch: int = DECODE_BATCH) -> tuple[list[str], float]:
        config = self._config(run_dir, f"decode-beam{beam}-batch{batch}.yaml", beam_size=beam, batch_size=batch,
                              load_model=str(run_dir / "model" / "latest.ckpt"))
        output, log = run_dir / f"test-beam{beam}-batch{batch}.txt", run_dir / f"decode-beam{beam}-batch{batch}.log"
        # the outputs come from stdout: 2.3.0's --output-path fails (it reads args.n_best, not args.test.n_best)
        command = [str(self.python), "-m", "joeynmt", "translate", str(config)]
        monitored = run_monitored(command, log=log, threads=self.threads, stdin=self.data / "test2016.de", stdout=output)
        check(monitored, log, "joeynmt translate")
        seconds = last_float(r"Generation took ([\d.]+)\[sec\]", log.read_text(errors="replace"), log)
        return moses_detokenized(output), seconds


class OpenNMT(System):
    name, label, dist, family = "opennmt", "OpenNMT-py", "OpenNMT-py", "opennmt"
    checkpoints_on_stop = False
    CPU_INDEX = "https://download.pytorch.org/whl/cpu"

    @property
    def vocab(self) -> Path:
        return self.work / "onmt-vocab"

    def setup(self) -> bool:
        # torch 2.2 (the newest OpenNMT-py 3.5.1 allows) from the CPU index where it is reachable;
        # otherwise PyPI's CUDA build, which runs on the CPU too. Its wheels need numpy < 2.
        steps = [["torch==2.2.2", "numpy<2", "OpenNMT-py==3.5.1", "importlib-metadata"]]
        first = ["torch==2.2.2", "--index-url", self.CPU_INDEX, "--timeout", "20", "--retries", "0"]
        if not ensure_venv(self.python.parents[1], steps, log=self.install_log, optional_first=first):
            return False
        if not (self.vocab / "vocab.en").exists():
            config = self._config(self.vocab, "build_vocab.yaml")
            log = self.vocab / "build_vocab.log"
            command = [str(self.python.parent / "onmt_build_vocab"), "-config", str(config), "-n_sample", "-1"]
            check(run_monitored(command, log=log, threads=self.threads), log, "onmt_build_vocab")
        return True

    def _config(self, run_dir: Path, name: str, steps: int | None = None) -> Path:
        config = yaml.safe_load(self.config.read_text())
        run_dir.mkdir(parents=True, exist_ok=True)
        config.update(save_data=str(self.vocab / "sample"), src_vocab=str(self.vocab / "vocab.de"),
                      tgt_vocab=str(self.vocab / "vocab.en"), save_model=str(run_dir / "model"))
        config["data"] = {
            "corpus_1": {"path_src": str(self.data / "train.de"), "path_tgt": str(self.data / "train.en")},
            "valid": {"path_src": str(self.data / "valid.de"), "path_tgt": str(self.data / "valid.en")},
        }
        if steps is not None:  # a quality run: stop and save after exactly this many steps
            config.update(train_steps=steps, save_checkpoint_steps=steps)
        path = run_dir / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def train(self, run_dir: Path, *, seconds: float, steps: int | None = None) -> TrainRun:
        command = [str(self.python.parent / "onmt_train"), "-config", str(self._config(run_dir, "config.yaml", steps))]
        log = run_dir / "train.log"
        monitored = run_monitored(command, log=log, threads=self.threads, start_marker="Start training loop",
                                  stop_after=None if steps else seconds, limit=seconds * 3 + 1800)
        check(monitored, log, "onmt_train", stopped_ok=steps is None)
        text = log.read_text(errors="replace")
        readings, previous = [], 0
        pattern = r"Step (\d+)(?:/\s*\d+)?;.*?bsz:\s*[\d.]+/\s*([\d.]+)/\s*[\d.]+;\s*[\d.]+/\s*([\d.]+) tok/s;"
        for step, tgt_per_batch, rate in re.findall(pattern, text):
            batches = int(step) - previous  # tokens = mean target tokens per batch x batches
            readings.append(Reading(batches, float(rate), float(tgt_per_batch) * batches / max(float(rate), 1e-9)))
            previous = int(step)
        return TrainRun(self.name, first_int(r"\* number of parameters: (\d+)", text), readings,
                        monitored.window_seconds, monitored.wall_seconds, monitored.peak_rss_mb)

    def decode(self, run_dir: Path, *, beam: int, batch: int = DECODE_BATCH) -> tuple[list[str], float]:
        model = max(run_dir.glob("model_step_*.pt"), key=lambda path: int(path.stem.rsplit("_", 1)[1]))
        output, log = run_dir / f"test-beam{beam}-batch{batch}.txt", run_dir / f"decode-beam{beam}-batch{batch}.log"
        command = [str(self.python.parent / "onmt_translate"), "-model", str(model), "-src", str(self.data / "test2016.de"),
                   "-output", str(output), "-beam_size", str(beam), "-batch_size", str(batch), "-batch_type", "sents",
                   "-max_length", str(DECODE_MAX_LEN), "-length_penalty", "none", "-report_time"]
        check(run_monitored(command, log=log, threads=self.threads), log, "onmt_translate")
        seconds = last_float(r"Total translation time \(s\): ([\d.]+)", log.read_text(errors="replace"), log)
        return moses_detokenized(output), seconds


class OursBF16(Ours):
    """Ours with bf16 autocast (train.precision=bf16): only where the CPU has bfloat16 kernels
    (AVX512-BF16 or AMX); elsewhere ours refuses it and the run fails with that message."""

    name, label = "ours-bf16", "ours, bf16 autocast"
    overrides = ("train.precision=bf16",)


SYSTEMS: dict[str, type[System]] = {"ours": Ours, "ours-bf16": OursBF16, "joey": Joey, "opennmt": OpenNMT}


# ---------------------------------------------------------------------------------------------
# Driver and report
# ---------------------------------------------------------------------------------------------

def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def measure_quality(system: System, speed: TrainRun, *, minutes: float, run_dir: Path, references: list[str],
                    batches: list[int]) -> tuple[TrainRun, list[Decoded]]:
    """Train ``minutes`` (or, for a system that saves nothing when stopped, the steps its speed run
    would do in that time), then decode test2016 (see :func:`decode_test`). The training run is
    returned too: its tokens/s and peak memory over the whole budget, a longer window than the
    speed run's."""
    steps = None
    if not system.checkpoints_on_stop:
        steps = max(1, round(minutes * 60 * speed.steps_per_s))
    print(f"{system.label}: quality run, {minutes:g} minutes" + (f" ({steps} steps)" if steps else ""), file=sys.stderr)
    trained = system.train(run_dir, seconds=minutes * 60, steps=steps)
    return trained, decode_test(system, run_dir, references=references, batches=batches,
                                train_seconds=trained.window_seconds)


def decode_test(system: System, run_dir: Path, *, references: list[str], batches: list[int],
                train_seconds: float | None) -> list[Decoded]:
    """Decode test2016 with the model trained in ``run_dir``, greedily and with beam 5, at each
    batch size (ours with fp32 and with int8 weights), and score each output with sacreBLEU."""
    results = []
    variants = [None, "int8"] if isinstance(system, Ours) else [None]  # ours also with int8 weights
    for batch in batches:
        for quantize in variants:
            for decoding, beam in DECODINGS:
                options = {"quantize": quantize} if quantize else {}
                hypotheses, seconds = system.decode(run_dir, beam=beam, batch=batch, **options)
                results.append(Decoded(system.name, decoding, len(hypotheses), seconds,
                                       corpus_sacrebleu(hypotheses, references), train_seconds, quantize or "fp32", batch))
                print(f"  {system.label} {decoding} {results[-1].weights} batch {batch}: {results[-1].sacrebleu:.2f} "
                      f"BLEU, {results[-1].sentences_per_s:.1f} sentences/s", file=sys.stderr)
    return results


def speed_table(runs: dict[str, TrainRun], labels: dict[str, str], versions: dict[str, dict[str, str]],
                paired: dict[str, list[float]] | None = None) -> str:
    """One row per system; ``paired`` (interleaved rounds) gives its ratio column the median of each
    peer's paired ratios instead of the ratio of the two rows."""
    ours = runs.get("ours")
    lines = [
        "| system | package | torch | parameters | training s | steady readings | tgt tokens/s | ours / system "
        "| peak RSS MiB | wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in runs.items():
        ratio = f"{ours.tokens_per_s / run.tokens_per_s:.2f}x" if ours else "-"
        if paired is not None and name != "ours":
            ratio = f"{statistics.median(paired[name]):.2f}x (paired)" if paired.get(name) else "-"
        parameters = f"{run.parameters:,}" if run.parameters else "?"
        window = f"{run.window_seconds:.0f}" if run.window_seconds else "?"
        lines.append(f"| {labels[name]} | {versions[name]['package']} | {versions[name]['torch']} | {parameters} "
                     f"| {window} | {run.steady_readings} of {len(run.readings)} | {run.tokens_per_s:,.0f} | {ratio} "
                     f"| {run.peak_rss_mb:,.0f} | {run.wall_seconds:.0f} |")
    return "\n".join(lines)


def median_run(runs: list[TrainRun]) -> TrainRun:
    """The window whose tokens/s is the median (for an even count the slower of the middle two: a
    window that really ran, whose steps/s sets a peer's quality-run step budget)."""
    return sorted(runs, key=lambda run: run.tokens_per_s)[(len(runs) - 1) // 2]


def paired_ratios(rounds: list[dict[str, TrainRun]]) -> dict[str, list[float]]:
    """For each peer, ours' tokens/s over the peer's in every round where both ran."""
    peers = {name for speed in rounds for name in speed if name != "ours"}
    return {peer: [speed["ours"].tokens_per_s / speed[peer].tokens_per_s
                   for speed in rounds if "ours" in speed and peer in speed] for peer in sorted(peers)}


def rounds_table(rounds: list[dict[str, TrainRun]], labels: dict[str, str]) -> str:
    """Target tokens/s of every window, round by round, and ours over each peer within a round
    (the paired ratio); the last row: the medians (of an even count, the mean of the middle two)
    and the ratios' range."""
    names = list(dict.fromkeys(name for speed in rounds for name in speed))
    peers = [name for name in names if name != "ours"] if "ours" in names else []
    lines = ["| round | " + " | ".join(labels[name] for name in names) + "".join(f" | ours / {labels[p]}" for p in peers) + " |",
             "|---:|" + "---:|" * (len(names) + len(peers))]
    for index, speed in enumerate(rounds, 1):
        cells = [f"{speed[name].tokens_per_s:,.0f}" if name in speed else "-" for name in names]
        cells += [f"{speed['ours'].tokens_per_s / speed[peer].tokens_per_s:.2f}x" if "ours" in speed and peer in speed
                  else "-" for peer in peers]
        lines.append(f"| {index} | " + " | ".join(cells) + " |")
    medians = [f"{statistics.median(s[name].tokens_per_s for s in rounds if name in s):,.0f}" for name in names]
    ratios = paired_ratios(rounds)
    medians += [f"**{statistics.median(ratios[peer]):.2f}x** ({min(ratios[peer]):.2f}-{max(ratios[peer]):.2f}x)"
                if ratios[peer] else "-" for peer in peers]
    lines.append("| median | " + " | ".join(medians) + " |")
    return "\n".join(lines)


def quality_table(decoded: list[Decoded], labels: dict[str, str]) -> str:
    """BLEU and decoding speed; the ratio columns divide ours' sentences/s (fp32, int8) by each
    row's, at the same decoding and batch size."""
    ours = {d.key[1:]: d for d in decoded if d.system == "ours"}
    lines = [
        "| system | weights | decoding | batch | trained s | test2016 sacreBLEU | sentences/s | ours fp32 / system "
        "| ours int8 / system |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for d in sorted(decoded, key=lambda d: -d.batch):  # stable: within a batch size, the order measured
        ratios = [f"{ours[d.decoding, weights, d.batch].sentences_per_s / d.sentences_per_s:.2f}x"
                  if (d.decoding, weights, d.batch) in ours else "-" for weights in ("fp32", "int8")]
        trained = f"{d.train_seconds:.0f}" if d.train_seconds else "?"
        lines.append(f"| {labels[d.system]} | {d.weights} | {d.decoding} | {d.batch} | {trained} | {d.sacrebleu:.2f} "
                     f"| {d.sentences_per_s:,.1f} | {' | '.join(ratios)} |")
    return "\n".join(lines)


MODEL_NOTES = {
    "rnn": """\
- The models are close but not identical: all three attend after the GRU step with an additive
  score (ours and Joey NMT: "bahdanau"; OpenNMT-py: "mlp") and feed the previous attentional vector
  back (input feeding, through a 512 tanh readout); ours starts the decoder from a learned tanh
  bridge over the encoder's final states. Parameter counts differ accordingly.
""",
    "transformer": """\
- The Transformers have the same sizes and layout (pre-norm, sinusoidal positions, tied output
  layer, no dropout on the attention weights); the parameter counts differ by less than 0.1 %
  (which linear layers carry a bias).
""",
}

NOTES = """\
Notes:
- ours / system: ours' figure over the system's; above 1.00x, ours is faster.
{models}- tgt tokens/s: non-padding target tokens, <eos> included, <sos> not, for all three (ours: the
  tgt_tokens of metrics.jsonl; Joey NMT: batch.ntokens in "Tokens per Sec"; OpenNMT-py: n_words in
  "tok/s"). Readings: ours every 50 steps, the peers every 10; the first reading and any starting in
  the first 10% of the logged time are dropped, the rest are weighted by time (Joey NMT's
  durations come from its log's timestamps, the others' from their token counts).
- Batching: ours and OpenNMT-py group sentences of similar length; Joey NMT draws random batches of
  128 sentences, with more padding, which costs it compute that tokens/s does not count.
- Each system runs in its own process with OMP_NUM_THREADS=MKL_NUM_THREADS={threads} and torch's own build
  (the torch column); OpenNMT-py is limited to torch < 2.3. Peak RSS is the process tree's, polled."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", help=f"comma-separated systems: {', '.join(SYSTEMS)} (default: ours,joey,opennmt; "
                                         "with --model transformer: ours,opennmt)")
    parser.add_argument("--train-seconds", type=float, default=300, help="training window per system (default 300)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="speed windows per system, interleaved round by round; the table gives each system's "
                             "median window and the ratios within each round (default 1)")
    parser.add_argument("--quality-minutes", type=float, default=0,
                        help="also train each system this long and score test2016 (default 0: off)")
    parser.add_argument("--work", type=Path, default=Path("~/.cache/seq2seq-bench"),
                        help="scratch folder: venvs, tokenized data, runs (default ~/.cache/seq2seq-bench)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "multi30k",
                        help="raw Multi30k: {train,valid,test2016}.{de,en}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per system (default 2)")
    parser.add_argument("--model", choices=sorted(MODELS), default="rnn",
                        help="rnn: the biGRU baseline (every system); transformer: the Transformer of "
                             "configs/multi30k/transformer.yaml against OpenNMT-py's (bench/peers/opennmt-transformer.yaml)")
    parser.add_argument("--decode-batches", default="64,1",
                        help="comma-separated batch sizes (sentences) for decoding test2016 (default 64,1)")
    parser.add_argument("--decode-only", action="store_true",
                        help="train nothing: decode with the models of the quality run recorded in --json, "
                             "and add the results to that record")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="print the tables of an earlier --json record (complete or not), run nothing")
    parser.add_argument("--setup-only", action="store_true",
                        help="install the peers and tokenize the data, then stop (e.g. while the machine is busy)")
    args = parser.parse_args()
    if args.peers is None:
        args.peers = "ours,joey,opennmt" if args.model == "rnn" else "ours,opennmt"
    args.peers = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = [name for name in args.peers if name not in SYSTEMS]
    if unknown or not args.peers:
        parser.error(f"--peers: unknown {', '.join(unknown) or '(none given)'}; valid: {', '.join(SYSTEMS)}")
    text = args.decode_batches
    try:
        args.decode_batches = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        args.decode_batches = []
    if not args.decode_batches or min(args.decode_batches) < 1:
        parser.error(f"--decode-batches: expected positive integers separated by commas, got {text!r}")
    without = [name for name in args.peers if SYSTEMS[name].family not in MODELS[args.model]]
    if without:
        parser.error(f"--peers: {', '.join(without)} has no {args.model} configuration; "
                     f"with --model {args.model}: {', '.join(n for n, s in SYSTEMS.items() if s.family in MODELS[args.model])}")
    if args.rounds < 1:
        parser.error(f"--rounds: expected a positive number of rounds, got {args.rounds}")
    if args.decode_only and (args.json is None or not args.json.exists()):
        parser.error("--decode-only adds to an earlier record: give it with --json (an existing file)")
    args.work, args.data = args.work.expanduser().resolve(), args.data.expanduser().resolve()
    return args


def set_up(args: argparse.Namespace) -> dict[str, System]:
    """Tokenized data and one venv per peer; a peer that cannot be installed is skipped."""
    data = prepare_data(args.data, args.work / "data")
    systems = {}
    for name in args.peers:
        system = SYSTEMS[name](work=args.work, raw=args.data, data=data, threads=args.threads, model=args.model)
        if system.setup():
            systems[name] = system
        else:
            print(f"{system.label}: could not be installed (see {system.install_log}); skipped", file=sys.stderr)
    return systems


def save_json(path: Path, record: dict) -> None:
    """Write ``record`` whole or not at all (a temporary file, then a rename)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2))
    partial.replace(path)


def train_runs(part: dict) -> dict[str, TrainRun]:
    """A record's {system: run} part (training, quality_training, or one of the rounds) as TrainRuns."""
    return {name: TrainRun(**{**run, "readings": [Reading(**r) for r in run["readings"]]}) for name, run in part.items()}


def load_json(path: Path) -> tuple[dict, dict[str, TrainRun], list[Decoded], dict[str, TrainRun]]:
    """A --json record back as its speed runs, decodings and quality runs (for --report); its
    rounds stay plain dicts in the record (--decode-only writes it back), read by :func:`report`."""
    try:
        record = json.loads(path.read_text())
        decoded = [Decoded(**{k: v for k, v in d.items() if k != "sentences_per_s"}) for d in record["decoding"]]
        for speed in record.get("rounds", []):  # --rounds above 1 only; checked here, read by report
            train_runs(speed)
        return record, train_runs(record["training"]), decoded, train_runs(record.get("quality_training", {}))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"--report {path}: not a record written by bench/peers.py --json ({error})") from None


def report(record: dict, runs: dict[str, TrainRun], decoded: list[Decoded],
           quality_runs: dict[str, TrainRun] | None = None) -> None:
    labels = {name: SYSTEMS[name].label for name in SYSTEMS}
    print(f"command: {record['command']}")
    for command in record.get("decode_commands", []):
        print(f"decoded again: {command}")
    for name, error in record.get("failed", {}).items():
        print(f"FAILED: {name}: {error}")
    missing = [name for name in record["systems"] if name not in runs]
    if missing:
        print(f"INCOMPLETE: {', '.join(missing)} not in this record (the run stopped early, or is still going)")
    print(f"Multi30k de->en, the {record.get('model', 'rnn')} model, {record['machine']}, {record['threads']} torch threads per system, "
          f"load average {record['load_average']:.2f} at the start and {record['load_average_end']:.2f} at the end "
          f"(above 0.5: shared, noisy)")
    rounds = [train_runs(speed) for speed in record.get("rounds", [])]
    if len(rounds) > 1:
        print(f"{len(rounds)} interleaved rounds of {record['train_seconds']:g} s per system: each system's median "
              "window below, its ratio the median of the rounds' paired ratios; then every window")
    print(speed_table(runs, labels, record["versions"], paired_ratios(rounds) if len(rounds) > 1 else None))
    for run in runs.values():
        if run.note:
            print(f"- {run.note}")
    if len(rounds) > 1:
        print()
        print(rounds_table(rounds, labels))
    if quality_runs:
        print()
        print(f"Training over the quality run ({record['quality_minutes']:g} minutes; the peers: the steps their speed run does in that time):")
        print(speed_table(quality_runs, labels, record["versions"]))
    if decoded:
        print()
        print(quality_table(decoded, labels))
    print()
    print(NOTES.format(threads=record["threads"], models=MODEL_NOTES[record.get("model", "rnn")]))


def runs_prefix(model: str) -> str:
    """The runs of a model other than the RNN baseline go in folders of their own under --work/runs."""
    return "" if model == "rnn" else f"{model}-"


def decode_again(args: argparse.Namespace, systems: dict[str, System]) -> None:
    """``--decode-only``: decode with the models the recorded quality run left in ``--work`` and
    merge the results into the record (a result measured again replaces the old one)."""
    record, runs, decoded, quality_runs = load_json(args.json)
    model = record.get("model", "rnn")
    if model != args.model:
        raise SystemExit(f"--decode-only: {args.json} records the {model} model; run it with --model {model}")
    references = read_lines(args.data / "test2016.en")
    record.setdefault("decode_commands", []).append("python bench/peers.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    for name, system in systems.items():
        run_dir = args.work / "runs" / f"{runs_prefix(args.model)}{name}-quality"
        if name not in quality_runs or not run_dir.is_dir():
            print(f"{system.label}: no quality run in {args.json} or no {run_dir}; skipped", file=sys.stderr)
            continue
        try:
            fresh = decode_test(system, run_dir, references=references, batches=args.decode_batches,
                                train_seconds=quality_runs[name].window_seconds)
        except RuntimeError as error:
            print(f"{system.label} failed, going on with the next system: {error}", file=sys.stderr)
            continue
        keys = {d.key for d in fresh}
        decoded = [d for d in decoded if d.key not in keys] + fresh
        record["decoding"] = [d.as_record() for d in decoded]
        save_json(args.json, record)
    report(record, runs, decoded, quality_runs)


def main() -> None:
    args = parse_args()
    if args.report:
        report(*load_json(args.report))
        return
    command = "python bench/peers.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    load = os.getloadavg()[0]
    systems = set_up(args)
    if args.setup_only:
        print(f"set up in {args.work}: {', '.join(system.label for system in systems.values()) or 'nothing'}")
        return
    if args.decode_only:
        decode_again(args, systems)
        return
    record = {
        "command": command, "model": args.model, "train_seconds": args.train_seconds, "quality_minutes": args.quality_minutes,
        "threads": args.threads, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average": load,
        "systems": list(systems), "versions": {name: system.versions() for name, system in systems.items()},
        "load_average_end": load, "training": {}, "decoding": [],
    }
    references = read_lines(args.data / "test2016.en")
    prefix = runs_prefix(args.model)
    rounds: list[dict[str, TrainRun]] = []  # the speed windows, round by round
    runs: dict[str, TrainRun] = {}  # each system's median window
    quality_runs: dict[str, TrainRun] = {}
    decoded: list[Decoded] = []

    def failed(name: str, system: System, error: RuntimeError, phase: str) -> None:  # the others go on measuring
        print(f"{system.label} failed, going on with the next system: {error}", file=sys.stderr)
        first = str(error).splitlines()[0]  # what it measured before stays
        record.setdefault("failed", {})[name] = f"{phase}: {first}" if phase else first

    def save() -> None:  # after every window: a run stopped part-way keeps what it measured (--report renders it)
        record.update(load_average_end=os.getloadavg()[0],
                      training={n: asdict(run) for n, run in runs.items()},
                      quality_training={n: asdict(run) for n, run in quality_runs.items()},
                      decoding=[d.as_record() for d in decoded])
        if args.rounds > 1:
            record["rounds"] = [{n: asdict(run) for n, run in speed.items()} for speed in rounds]
        if args.json:
            save_json(args.json, record)

    for index in range(args.rounds):  # one system at a time: the machine has 2 cores
        rounds.append({})
        for name, system in systems.items():
            if name in record.get("failed", {}):
                continue
            try:
                of = f" (round {index + 1} of {args.rounds})" if args.rounds > 1 else ""
                print(f"{system.label}: training {args.train_seconds:g} s{of} ...", file=sys.stderr)
                rounds[-1][name] = system.train(fresh_dir(args.work / "runs" / f"{prefix}{name}-speed"), seconds=args.train_seconds)
                print(f"  {system.label}: {rounds[-1][name].tokens_per_s:,.0f} tgt tokens/s", file=sys.stderr)
                runs[name] = median_run([speed[name] for speed in rounds if name in speed])
            except RuntimeError as error:
                failed(name, system, error, f"round {index + 1}" if args.rounds > 1 else "")
            save()
    for name, system in systems.items():
        if args.quality_minutes <= 0 or name not in runs or name in record.get("failed", {}):
            continue
        try:
            quality_runs[name], scored = measure_quality(system, runs[name], minutes=args.quality_minutes,
                                                         references=references, batches=args.decode_batches,
                                                         run_dir=fresh_dir(args.work / "runs" / f"{prefix}{name}-quality"))
            decoded += scored
        except RuntimeError as error:
            failed(name, system, error, "quality run")
        save()
    report(record, runs, decoded, quality_runs)


if __name__ == "__main__":
    # SIGTERM (kill, pkill) as SystemExit, so that run_monitored's cleanup stops the running system too;
    # set by the process, not by main(), which the tests call in theirs
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    main()
