"""Training and decoding speed of this tree against an earlier commit, in alternating rounds.

    python bench/against_commit.py dd21302 [--config configs/multi30k/bigru-attention.yaml ...]
        [--set KEY=VALUE ...] [--rounds 3] [--batches 40] [--decode RUN [--sources FILE] [--ops]]
        [--no-training] [--work DIR]

Checks a refactoring's "same speed as before": the earlier commit is checked out as a git worktree
under ``--work`` and each round runs ``bench/train_speed.py`` (and, with ``--decode RUN``,
``bench/decoding.py`` on that trained run, greedy and beam 5, batch 64 and batch 1) once from each
tree, in separate processes that import the tree's own ``src/``, the two taking turns to go first.
Each tree reads its own copy of a configuration, whose data paths resolve from this directory. The result is
each tree's median and the median of the per-round ratios (this tree / the earlier commit); the
machine is shared and noisy, so only ratios of the same run mean anything. Run it on an otherwise
idle machine. ``--decode`` needs a run directory that both trees can load (train it with the
earlier commit's code if the checkpoint format changed since). ``--sources FILE`` checks "same
outputs" as well: each tree's ``seq2seq generate RUN --file FILE --scores``, greedy and beam 5, must
print the same lines (texts, log-probabilities, parse flags); the differing lines are counted.
``--ops`` checks "same work", which timings on a noisy machine cannot settle: this tree's
``bench/decode_ops.py`` counts the PyTorch operators and Python calls of decoding 64 sources (greedy
and beam 5) with each tree's package, and the operators whose counts differ are listed; the time
spent inside the operators (the median of three profiled searches) follows, with the three
operators whose time moved most, and a search's wall time unprofiled (the median of three), to tell
slower work from slower Python or noise.
``--no-training`` leaves the training readings out (decoding only).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENS_PER_S = re.compile(r"target tokens/s ([\d,]+)")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def worktree(commit: str, work: Path) -> Path:
    """A detached worktree of ``commit`` under ``work`` (made once, reused after)."""
    sha = git("rev-parse", "--verify", f"{commit}^{{commit}}")
    tree = work / f"tree-{sha[:12]}"
    if not (tree / "src" / "seq2seq").is_dir():
        work.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--force", "--detach", str(tree), sha)
    return tree


@functools.cache
def tree_env(tree: Path) -> dict[str, str]:
    """The environment that makes a process import ``tree``'s own package (checked once per tree)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    found = subprocess.run([sys.executable, "-c", "import seq2seq; print(seq2seq.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(found).is_relative_to(tree / "src"):
        raise SystemExit(f"{tree}: imports seq2seq from {found}, not from its own src/")
    return env


def python_in(tree: Path, args: list[str], what: str) -> str:
    """Run ``python ARGS`` with ``tree``'s package on the path, from this repository; its stdout
    (``what`` names it when it fails)."""
    done = subprocess.run([sys.executable, *args], env=tree_env(tree), cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree}: {what} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def run_from(tree: Path, script: str, args: list[str]) -> str:
    """Run ``tree``'s bench script with ``tree``'s package on the path; its stdout."""
    return python_in(tree, [str(tree / "bench" / script), *args], f"bench/{script}")


def training_speed(tree: Path, config: str, overrides: list[str], batches: int) -> float:
    own = tree / config  # each tree reads its own copy of the recipe (the schema may have changed between them)
    if not own.is_file():
        raise SystemExit(f"{own}: no such configuration in that tree")
    args = [str(own), "--batches", str(batches), *(item for o in overrides for item in ("--set", o))]
    found = TOKENS_PER_S.search(run_from(tree, "train_speed.py", args))
    if not found:
        raise SystemExit(f"{tree}: bench/train_speed.py printed no 'target tokens/s'")
    return float(found.group(1).replace(",", ""))


def decoding_speed(tree: Path, run: Path, out: Path) -> dict[str, float]:
    """Sentences/s per setting and batch size, e.g. {"beam5, batch 64": 41.2}."""
    run_from(tree, "decoding.py", [str(run), "--settings", "greedy,beam5", "--batch1-limit", "100", "--json", str(out)])
    return {f"{m['setting']}, batch {m['batch_size']}": m["sentences_per_s"] for m in json.loads(out.read_text())}


def operations(tree: Path, run: Path, beam: int) -> dict:
    """Operator and Python call counts, the operators' time and a search's wall time, decoding with
    ``tree``'s package (this tree's bench/decode_ops.py, three profiled and three timed searches)."""
    script = [str(REPO / "bench" / "decode_ops.py"), str(run), "--beam", str(beam), "--repeat", "3"]
    printed = python_in(tree, script, "bench/decode_ops.py")
    return json.loads(printed.splitlines()[-1])


def compare_operations(ours: dict, theirs: dict) -> str:
    """One line: both trees' totals, each operator whose count differs, the time in the operators with
    the three that moved most, and a search's wall time (earlier -> this tree)."""
    names = sorted(set(ours["by_operator"]) | set(theirs["by_operator"]))
    changed = [f"{name} {theirs['by_operator'].get(name, 0)} -> {ours['by_operator'].get(name, 0)}" for name in names
               if ours["by_operator"].get(name, 0) != theirs["by_operator"].get(name, 0)]
    times = ours["self_ms_by_operator"], theirs["self_ms_by_operator"]

    def moved_by(name: str) -> tuple[float, str]:  # the largest change first; ties by name, so the line repeats
        return -abs(times[0].get(name, 0) - times[1].get(name, 0)), name

    moved = sorted(set(times[0]) | set(times[1]), key=moved_by)
    largest = [f"{name} {times[1].get(name, 0):,.1f} -> {times[0].get(name, 0):,.1f}" for name in moved[:3]]
    return (f"operators {theirs['operators']:,} -> {ours['operators']:,}, Python calls {theirs['python_calls']:,} -> "
            f"{ours['python_calls']:,}; differing operators: {', '.join(changed) or 'none'}; time in the operators "
            f"{theirs['self_ms']:,.0f} -> {ours['self_ms']:,.0f} ms (**{ours['self_ms'] / theirs['self_ms']:.3f}x**; "
            f"moved most, ms: {', '.join(largest)}); a search unprofiled {theirs['wall_ms']:,.0f} -> {ours['wall_ms']:,.0f} ms")


def generated(tree: Path, run: Path, sources: Path, beam: int) -> list[str]:
    """What ``seq2seq generate RUN --file SOURCES --scores --beam BEAM`` prints with ``tree``'s code."""
    code = "import sys; from seq2seq.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["-c", code, "generate", str(run), "--file", str(sources), "--scores", "--beam", str(beam)]
    return python_in(tree, args, "seq2seq generate").splitlines()


def search_name(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam {beam}"


def summary(name: str, ours: list[float], theirs: list[float], unit: str) -> str:
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return (f"| {name} | {statistics.median(theirs):,.1f} | {statistics.median(ours):,.1f} | {unit} "
            f"| **{statistics.median(ratios):.3f}x** ({', '.join(f'{r:.3f}' for r in ratios)}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", help="the earlier commit (any git revision)")
    parser.add_argument("--config", action="append", help="training configuration(s) (default: the biGRU Multi30k recipe)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40, help="timed training batches per reading")
    parser.add_argument("--decode", type=Path, metavar="RUN", help="also time decoding of this trained run")
    parser.add_argument("--sources", type=Path, metavar="FILE",
                        help="with --decode: also compare both trees' outputs on these source lines")
    parser.add_argument("--ops", action="store_true",
                        help="with --decode: also count both trees' operators and Python calls (bench/decode_ops.py)")
    parser.add_argument("--no-training", action="store_true", help="time decoding only")
    parser.add_argument("--work", type=Path, default=Path("~/.cache/seq2seq-bench").expanduser())
    args = parser.parse_args()
    if args.rounds < 1 or args.batches < 1:
        parser.error("--rounds and --batches must be at least 1")
    if (args.sources or args.ops or args.no_training) and not args.decode:
        parser.error("--sources, --ops and --no-training need --decode RUN")
    if args.no_training and (args.config or args.overrides):
        parser.error("--no-training times no training: leave out --config and --set")
    configs = [] if args.no_training else args.config or ["configs/multi30k/bigru-attention.yaml"]
    before, here = worktree(args.commit, args.work), REPO
    head = git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    print("command:", shlex.join(["python", "bench/against_commit.py", *sys.argv[1:]]))
    print(f"earlier: {git('rev-parse', '--short', args.commit)} ({before}); this tree: {head}")

    train = {config: ([], []) for config in configs}   # config -> (this tree's readings, the earlier commit's)
    decode: dict[str, tuple[list[float], list[float]]] = {}
    for round_ in range(args.rounds):
        order = [(0, here), (1, before)] if round_ % 2 == 0 else [(1, before), (0, here)]
        for config in configs:
            for side, tree in order:
                train[config][side].append(training_speed(tree, config, args.overrides, args.batches))
                print(f"round {round_ + 1}, {config}, {'this tree' if side == 0 else 'earlier'}: "
                      f"{train[config][side][-1]:,.0f} target tokens/s", file=sys.stderr, flush=True)
        if args.decode:
            for side, tree in order:
                for key, value in decoding_speed(tree, args.decode, args.work / f"decoding-{side}.json").items():
                    decode.setdefault(key, ([], []))[side].append(value)

    if args.decode and args.sources:
        for beam in (1, 5):
            ours, theirs = generated(here, args.decode, args.sources, beam), generated(before, args.decode, args.sources, beam)
            differing = sum(a != b for a, b in zip(ours, theirs)) + abs(len(ours) - len(theirs))
            print(f"outputs, {search_name(beam)}: {len(ours) - differing} of {len(ours)} "
                  f"lines identical (text, log-probability and parse flag)")

    if args.ops:
        for beam in (1, 5):
            counts = compare_operations(operations(here, args.decode, beam), operations(before, args.decode, beam))
            print(f"work, {search_name(beam)} (earlier -> this tree): {counts}")

    print(f"\n| measure | earlier ({args.commit}) | this tree | unit | this / earlier, median (per round) |")
    print("|---|---:|---:|---|---:|")
    for config, (ours, theirs) in train.items():
        print(summary(f"training, {config}", ours, theirs, "target tokens/s"))
    for key, (ours, theirs) in decode.items():
        print(summary(f"decoding {args.decode.name}, {key}", ours, theirs, "sentences/s"))


if __name__ == "__main__":
    main()
