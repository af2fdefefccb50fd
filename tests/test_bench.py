"""The benchmarks still run (speed itself is measured in docs/BENCHMARKS.md, never asserted here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaling_fit_line_recovers_a_line_and_its_r2():
    scaling = _load("scaling")
    a, b, r2 = scaling.fit_line([1, 2, 3, 4], [3, 5, 7, 9])
    assert (a, b, r2) == pytest.approx((1.0, 2.0, 1.0))
    _, _, r2 = scaling.fit_line([1, 2, 3, 4], [1, 4, 9, 16])
    assert r2 < 1.0


def test_scaling_benchmark_runs_on_tiny_sizes_and_prints_its_command(tmp_path):
    out = tmp_path / "scaling.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scaling.py"), "--sizes", "40,80", "--json", str(out),
         "--set", "model.encoder.hidden_size=16", "--set", "model.decoder.hidden_size=16",
         "--set", "model.decoder.attention_size=16", "--set", "train.threads=1", "--set", "train.device=cpu"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("command: python bench/scaling.py --sizes 40,80")
    assert "least squares: seconds =" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [row["pairs"] for row in rows] == [40, 80]
    assert rows[1]["target_tokens"] > rows[0]["target_tokens"]


def test_scaling_benchmark_rejects_bad_sizes(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "scaling.py"), "--sizes", "100,x"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "--sizes" in result.stderr and "Traceback" not in result.stderr
