"""Every command that README.md, docs/ and the recipes' comments show still runs as written on today's code, short of
running it: ``seq2seq`` parses it (options, ``--set`` keys and values, the config files and presets
it names) and each ``python bench/...`` or ``python examples/...`` script accepts its options. A renamed option or key then
fails here rather than in the hands of a reader reproducing a figure."""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from seq2seq.cli import _config_from_args, _config_sources, parse_args
from seq2seq.compare import compare_defaults
from seq2seq.config import PRESETS, build_config
from seq2seq.data.example import DataFolderNotFound

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"bash", "sh", "shell", "console"}
OPERATORS = {"&&", "||", ";", "|", "&", "(", ")"}
UNREADABLE = "<not a shell command>"


@dataclass(frozen=True)
class Command:
    document: str
    line: int  # of the block's line that starts the command
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {shlex.join(self.words)}"


def _shell_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, body) of each fenced block marked as a shell language."""
    blocks, body, start, language = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if body is None:
                body, start, language = [], number + 1, line.strip()[3:].strip()
            else:
                if language in SHELL_FENCES:
                    blocks.append((start, "\n".join(body)))
                body = None
        elif body is not None:
            body.append(line)
    return blocks


def _doc_notation_removed(line: str) -> str:
    """The docs write optional arguments as ``[--beam 5]`` and placeholders as ``<tree>``."""
    line = re.sub(r"\[(--[^\]]*)\]", r"\1", line)
    return re.sub(r"<([A-Za-z][\w -]*)>", r"\1", line)


def _commands(name: str, script: list[tuple[int, str]]) -> list[Command]:
    """The simple commands of a script given as (line number, line) pairs, with the script's own
    variables (``C=...``, ``export``, ``for seed in ...``) substituted."""
    found = []
    variables: dict[str, str] = {}
    for line_number, logical in script:
        text = _doc_notation_removed(logical)
        text = re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), text)
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            tokens = [*lexer, ";"]
        except ValueError as error:  # an unclosed quote: reported by the test below
            found.append(Command(name, line_number, (UNREADABLE, str(error), text)))
            continue
        words: list[str] = []
        for token in tokens:
            if token not in OPERATORS:
                words.append(token)
                continue
            if words and words[0] in ("do", "then", "else"):
                words.pop(0)
            if len(words) > 3 and words[0] == "for" and words[2] == "in":  # for seed in 42 43 44
                variables[words[1]] = words[3]
                words = []
            while words and re.fullmatch(r"\w+=.*", words[0]):  # NAME=value [command]
                variable, _, value = words.pop(0).partition("=")
                if not words:
                    variables[variable] = value
            if words and words[0] == "export":
                for word in words[1:]:
                    variable, _, value = word.partition("=")
                    variables[variable] = value
            elif words:
                found.append(Command(name, line_number, _unwrapped(tuple(words))))
            words = []
    return found


def _unwrapped(words: tuple[str, ...]) -> tuple[str, ...]:
    """The command a wrapper runs: ``/usr/bin/time -f FMT CMD``, ``torchrun ... -m seq2seq ARGS`` and
    ``python -m seq2seq ARGS`` as the seq2seq command they start."""
    if words[0] in ("time", "/usr/bin/time"):
        rest = list(words[1:])
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] in ("-f", "-o") else rest[1:]
        return _unwrapped(tuple(rest)) if rest else words
    for i in range(len(words) - 1):
        if words[0] in ("torchrun", "python", "python3") and words[i:i + 2] == ("-m", "seq2seq"):
            return ("seq2seq", *words[i + 2:])
    return words


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(number, text) of each line, a line ending in a backslash joined with the next."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        start, text = pending if pending else (number, "")
        text += line
        pending = (start, text[:-1] + " ") if line.rstrip().endswith("\\") else None
        if pending is None:
            joined.append((start, text))
    return joined + ([pending] if pending else [])


def _document_commands(document: Path) -> list[Command]:
    name = document.relative_to(ROOT).as_posix()
    return [command for start, body in _shell_blocks(document.read_text(encoding="utf-8"))
            for command in _commands(name, _logical_lines(list(enumerate(body.split("\n"), start))))]


def _config_commands(config: Path) -> list[Command]:
    """The commands a recipe's header comment tells the reader to run (``#   seq2seq train ...``)."""
    lines = config.read_text(encoding="utf-8").splitlines()
    script: list[tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        continued = bool(script) and script[-1][0] == number - 1 and script[-1][1].rstrip().endswith("\\")
        if continued or re.match(r"#\s+(seq2seq|python bench/|for \w+ in |done\b)", line):
            script.append((number, re.sub(r"^#\s*", "", line)))
    return _commands(config.relative_to(ROOT).as_posix(), _logical_lines(script))


ALL = [command for document in DOCUMENTS for command in _document_commands(document)] + [
    command for config in sorted((ROOT / "configs").rglob("*.yaml")) for command in _config_commands(config)]
SEQ2SEQ = [c for c in ALL if c.words[0] == "seq2seq"]
SCRIPTS = [c for c in ALL if c.words[0] == "python" and len(c.words) > 1 and c.words[1].startswith(("bench/", "examples/"))]


def test_every_shell_block_reads_as_shell():
    assert [str(c) for c in ALL if c.words[0] == UNREADABLE] == []


def test_the_documents_show_commands_to_check():
    """Guards the extraction itself: if it broke, the tests below would pass on nothing, and a
    command that names seq2seq but is not read as one would go unchecked."""
    assert len(SEQ2SEQ) > 100 and len(SCRIPTS) > 40
    assert any(c.words[:2] == ("seq2seq", "compare") and "--seeds" in c.words for c in SEQ2SEQ)
    assert [str(c) for c in ALL if "seq2seq" in c.words and c not in SEQ2SEQ] == []


@pytest.mark.parametrize("command", SEQ2SEQ, ids=str)
def test_every_documented_seq2seq_command_parses(command: Command, capsys: pytest.CaptureFixture[str]):
    try:
        args = parse_args(list(command.words[1:]))
    except SystemExit:
        pytest.fail(f"{command}\n{capsys.readouterr().err}")
    for preset in getattr(args, "presets", "").split(","):
        assert not preset or preset in PRESETS, f"{command}: unknown preset {preset!r}"
    try:
        _check_config(command, args)
    except DataFolderNotFound as error:  # a real data set (../shared/data/...) that this machine does not have
        pytest.skip(f"{command}: {error}")


def _check_config(command: Command, args: argparse.Namespace) -> None:
    # --set keys and values, the config file, --preset, --task: as the command reads them, unless the
    # config is the reader's own (my.yaml) or made by an earlier command (runs/..., shards/...)
    made_elsewhere = any(name and not name.startswith("configs/") and not (ROOT / name).exists()
                         for name in (getattr(args, "config", None), getattr(args, "shards", None)))
    resumes = args.command == "train" and args.resume  # the saved run's config, not this command's
    if args.command in ("train", "preprocess") and not resumes and not made_elsewhere:
        _config_from_args(args)
    if args.command == "compare" and not made_elsewhere:  # as compare builds each preset's config
        base, overrides = _config_sources(args)
        for preset in [p for p in args.presets.split(",") if p in PRESETS]:
            build_config(base=base, preset=preset, overrides=[*compare_defaults(base, preset), *overrides],
                         source=f"{command}: {preset}")


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("command", SCRIPTS, ids=str)
def test_every_documented_benchmark_and_example_accepts_its_options(command: Command, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]):
    script = ROOT / command.words[1]
    assert script.is_file(), f"{command}: no {command.words[1]}"
    monkeypatch.syspath_prepend(str(script.parent))  # as `python SCRIPT` puts its folder first (examples' _common)
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(parse(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [str(script), *command.words[2:]])
    monkeypatch.chdir(ROOT)
    with pytest.raises(_Parsed):
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit:
            pytest.fail(f"{command}\n{capsys.readouterr().err}")


# A listing that an example prints, "seq2seq/models/luong.py:52  scores = ...", quoted in the docs.
SOURCE_LINE = re.compile(r"^\s+(seq2seq/[\w/]+\.py):(\d+)  (.+)$")


def _quoted_source_lines() -> list[tuple[str, int, str, int, str]]:
    """(document, line in it, source path under src/, line number, quoted text) of every listing line."""
    found = []
    for document in DOCUMENTS:
        for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), start=1):
            match = SOURCE_LINE.match(line)
            if match:
                found.append((document.name, number, match[1], int(match[2]), match[3]))
    return found


def test_source_listings_in_the_documents_match_the_code():
    """docs/LEARN.md shows what examples/10_luong_attention.py prints: each score beside the lines of
    the package that compute it, as "path:line  code". A change to those files must update the page."""
    quoted = _quoted_source_lines()
    assert quoted, "no source listing found in the documents: the pattern or the pages changed"
    stale = []
    for document, at, path, number, text in quoted:
        lines = (ROOT / "src" / path).read_text(encoding="utf-8").splitlines()
        actual = lines[number - 1].strip() if 0 < number <= len(lines) else "<past the end of the file>"
        if actual != text.strip():
            stale.append(f"{document}:{at}: {path}:{number} is now {actual!r}, the page quotes {text.strip()!r}")
    assert not stale, "\n".join(stale)
