"""seq2seq.cpu_memory: freed host memory is reused instead of being mapped afresh (page faults)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from seq2seq.cli import main
from seq2seq.cpu_memory import ENV_VAR, keep_freed_memory

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="mallopt settings are glibc's"
)

# A fresh process allocates and writes a 40 MiB tensor (above glibc's largest mmap threshold, 32 MiB)
# over and over, as a training loop does with its logits, and prints the minor page faults of each
# of the last rounds. With reuse, the first rounds grow the heap (glibc's thread cache holds the small
# remainders that memalign splits off, which keeps the freed chunks from merging for about 8 rounds)
# and later ones fault on nothing. How many rounds the heap keeps growing depends on the machine (a
# CI run once saw one more growth among the measured rounds), so the test counts rounds, not pages:
# with reuse most rounds fault on almost nothing; with glibc's defaults most fault on every page.
ROUNDS = 8
FAULTS = f"""
import resource, torch
from seq2seq.cpu_memory import keep_freed_memory
applied = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):
    torch.empty(10 * 2**20).fill_(1.0)
rounds = []
for _ in range({ROUNDS}):
    before = faults()
    torch.empty(10 * 2**20).fill_(1.0)
    rounds.append(faults() - before)
print(applied, *rounds)
"""


def _faults(setting: str) -> tuple[bool, list[int]]:
    env = {**os.environ, ENV_VAR: setting}
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", [int(n) for n in out[1:]]


def _page_bytes() -> int:
    """The size one page fault maps: 2 MiB where transparent huge pages are always on, else the page size."""
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        mode = ""
    return 2 * 2**20 if "[always]" in mode else os.sysconf("SC_PAGE_SIZE")


@glibc_only
def test_freed_large_tensors_are_reused_without_page_faults():
    pages = 40 * 2**20 // _page_bytes()  # one tensor
    applied, rounds = _faults("reuse")
    assert applied
    reused = sum(n < max(pages // 10, 4) for n in rounds)  # a few stray faults are not a tensor
    assert reused >= ROUNDS - 2, f"page faults per 40 MiB tensor, last {ROUNDS} rounds: {rounds}: the memory was mapped again"
    # glibc's defaults map every tensor of this size afresh: the same rounds fault on (almost) every page.
    applied, rounds = _faults("system")
    assert not applied
    mapped = sum(n > pages // 2 for n in rounds)
    assert mapped >= ROUNDS - 2, f"page faults per 40 MiB tensor with glibc's defaults: {rounds}"


def test_system_keeps_glibc_defaults_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "system")
    assert keep_freed_memory() is False
    monkeypatch.setenv(ENV_VAR, "jemalloc")
    with pytest.raises(ValueError, match=f"{ENV_VAR}='jemalloc': expected 'reuse'"):
        keep_freed_memory()


def test_cli_reports_a_bad_setting_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(ENV_VAR, "fast")
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"seq2seq evaluate: error: {ENV_VAR}='fast': expected 'reuse'" in err
    assert "Traceback" not in err
