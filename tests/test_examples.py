"""The teaching examples (examples/NN_*.py) run in --quick mode, write their figure and print
the right key numbers. Each runs in-process (imports are paid once); one also runs as a script."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """The examples pin torch to one thread; the rest of the test session keeps its own setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (file names starting with a digit are not importable by name)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # the examples import their shared helpers as `_common`
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there while the file runs
    spec.loader.exec_module(module)
    return module


def run_quick(name: str, tmp_path: Path) -> tuple[ModuleType, dict[str, float]]:
    module = load(name)
    results = module.main(["--quick", "--out", str(tmp_path)])
    figure = tmp_path / module.FIGURE
    assert figure.is_file() and figure.stat().st_size > 10_000, figure
    return module, results


def test_every_example_has_a_docstring_and_a_quick_mode():
    scripts = sorted(EXAMPLES.glob("[0-9][0-9]_*.py"))
    assert len(scripts) == 12
    for script in scripts:
        text = script.read_text(encoding="utf-8")
        assert text.startswith('"""') and len(text.split('"""')[1]) > 300, script  # the concept, in words
        assert f"python examples/{script.name} --out docs/img/learn" in text, script


def test_01_rnn_step_same_number_at_every_level(tmp_path):
    _, results = run_quick("01_rnn_step", tmp_path)
    for level in ("python", "numpy", "torch"):
        assert round(results[f"scalar_{level}"], 4) == 0.9138
        assert results[f"scalar_{level}"] == pytest.approx(math.tanh(1.55), abs=1e-6)
    for key in ("vector_numpy_vs_python", "vector_torch_vs_python", "vector_reference_vs_python", "full_torch_vs_reference"):
        assert results[key] < 1e-6, key


def test_01_runs_as_a_script(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "01_rnn_step.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "h = 0.9138" in done.stdout
    assert (tmp_path / "01_rnn_step.png").is_file()


def test_02_gradients_vanish_or_explode(tmp_path):
    _, factors = run_quick("02_bptt_gradients", tmp_path)
    assert factors["rnn, gain 0.5"] < 0.6 < 1.0 < factors["rnn, gain 2.0"]
    assert factors["rnn"] < min(factors["gru"], factors["lstm"])  # at initialisation the RNN vanishes fastest
    assert factors["lstm, forget-gate bias 3"] > 0.9 > factors["lstm, forget-gate bias 0"]
    assert factors["gru, update-gate bias 3"] > 0.9 > factors["gru, update-gate bias 0"]


def test_03_gates_rebuild_the_encoder_states(tmp_path):
    _, results = run_quick("03_gates", tmp_path)
    assert results["lstm_rebuild_error"] < 1e-5 and results["gru_rebuild_error"] < 1e-5
    gates = [k for k in results if "gate" in k]
    assert len(gates) == 5 and all(0.0 < results[k] < 1.0 for k in gates)


def test_04_mask_keeps_padding_out(tmp_path):
    module, results = run_quick("04_padding_masking", tmp_path)
    package, no_mask, neither = module.SETTINGS
    assert results[f"{package}: pad mass"] == 0.0
    assert results[f"{package}: max logit diff"] < 1e-4
    for setting in (no_mask, neither):
        assert results[f"{setting}: pad mass"] > 0.01
        assert results[f"{setting}: max logit diff"] > 1e-3


def test_05_teacher_forcing_sweep(tmp_path):
    module, results = run_quick("05_teacher_forcing", tmp_path)
    for ratio in module.RATIOS:
        assert math.isfinite(results[f"ratio {ratio}: valid loss"])
        for metric in ("greedy exact match", "forced token accuracy", "greedy token accuracy"):
            assert 0.0 <= results[f"ratio {ratio}: {metric}"] <= 1.0


def test_06_bottleneck_buckets(tmp_path):
    module, results = run_quick("06_bottleneck", tmp_path)
    assert len(results) == len(module.PRESETS) * (len(module.EDGES) + 1)
    assert all(0.0 <= value <= 1.0 for value in results.values())


def test_07_attention_formula_and_weights(tmp_path):
    module, results = run_quick("07_attention", tmp_path)
    lines = module.formula_lines()
    assert len(lines) == len(module.FORMULA_CODE) == 4
    assert all(any(part in line for line in lines) for part in module.FORMULA_CODE)
    assert all(line.startswith("seq2seq/models/bahdanau.py:") for line in lines)
    rows = [k for k in results if k.endswith("rows sum to 1")]
    assert len(rows) == 2 and all(results[k] < 1e-5 for k in rows)


def test_07_toy_translation_reorders_adjectives():
    module = load("07_attention")
    example = module.toy_translation(200, seed=0)
    with_adjective = next(e for e in example if len(e.src.split()) == 7)  # "the adj noun verb the adj noun"
    src, tgt = with_adjective.src.split(), with_adjective.tgt.split()
    french = dict(module.ADJECTIVES)
    assert tgt[2] == french[src[1]]  # the adjective follows its noun


def test_08_backward_half_knows_the_next_word(tmp_path):
    _, results = run_quick("08_bidirectional", tmp_path)
    assert results["probe bidirectional, backward half k=+1"] > results["probe unidirectional k=+1"]
    assert results["probe unidirectional k=+0"] > results["probe always the most frequent word k=+0"]
    for name in ("unidirectional", "bidirectional"):
        assert 0.0 <= results[f"{name} test exact match"] <= 1.0


def test_09_sentiment(tmp_path):
    module, results = run_quick("09_sentiment", tmp_path)
    assert set(results) == {"test accuracy", "test accuracy, negated", "test accuracy, not negated", "showcase correct"}
    assert all(0.0 <= value <= 1.0 for value in results.values())
    sentences = module.reviews(300, 0, exclude=set(module.SHOWCASE))
    assert not set(module.SHOWCASE) & {e.src for e in sentences}
    assert {e.tgt for e in sentences} == {"positive", "negative"}
    assert module.is_negated("i am not happy") and not module.is_negated("i am happy")


def test_10_luong_scores_and_local_p_window(tmp_path):
    module, results = run_quick("10_luong_attention", tmp_path)
    for name, (_, _, cls, parts) in module.MODELS.items():
        assert len(module.formula_lines(cls, parts)) == len(parts), name
    for name in ("bahdanau", "luong-dot", "luong-general", "luong-concat"):  # softmax over the source: rows sum to 1
        assert results[f"{name}: rows sum to 1"] < 1e-5, name
    # local-p: a Gaussian times the softmax inside the window, so at most 1, and exactly 0 outside it
    assert results["local-p: max row sum"] <= 1 + 1e-6
    assert results["local-p: weight outside the window"] == 0.0
    assert results["local-p: positions in [0, S]"] == 1.0
    assert all(0.0 <= results[f"{name}: {kind} agreement"] <= 1.0 for name in module.MODELS
               for kind in ("alignment", "article"))


def test_10_gold_alignment_crosses():
    module = load("10_luong_attention")
    assert module.gold_alignment("the red car sees the dog".split(), "la voiture rouge voit le chien".split()) == [
        0, 2, 1, 3, 4, 5]
    for example in module.TOY.toy_translation(100, seed=0):  # every generated pair parses
        src, tgt = example.src.split(), example.tgt.split()
        gold = module.gold_alignment(src, tgt)
        assert sorted(gold) == list(range(len(src)))  # one target word per source word, each once
        verbs = dict(module.TOY.VERBS)
        assert all(verbs.get(src[s], tgt[t]) == tgt[t] for t, s in enumerate(gold))


def test_11_heads_sum_to_1_and_average_to_the_weights(tmp_path):
    module, results = run_quick("11_multihead", tmp_path)
    assert results["heads: max |row sum - 1|"] < 1e-5
    assert results["max |mean of heads - returned weights|"] < 1e-6
    assert results["max |attention_heads - heads stepped by hand|"] < 1e-5  # the package's helper, the same heads
    names = [f"head {i + 1}" for i in range(module.HEADS)] + ["mean"]
    for name in names:
        assert 0.0 <= results[f"{name}: alignment agreement"] <= 1.0
        assert 0.0 <= results[f"{name}: entropy bits"] <= math.log2(7) + 1e-6  # toy sources have at most 7 words
    assert module.entropy_bits(np.array([[1.0, 0.0], [0.5, 0.5]])) == pytest.approx(0.5)


def test_12_coverage_metrics_on_hand_made_inputs():
    module = load("12_coverage")
    assert module.repeated_ngrams("a b a b c".split(), 2) == {("a", "b")}
    assert module.repeats_unreferenced("x y x y".split(), "x y z".split(), 2)
    assert not module.repeats_unreferenced("x y x y".split(), "x y x y".split(), 2)  # the reference repeats it too
    assert not module.repeats_unreferenced("x y z".split(), "z y x".split(), 2)
    outputs, references = ["a b a b".split(), "a b c".split()], ["a b c d".split(), "a b c".split()]
    assert module.repetition_share(outputs, references, 2) == 0.5
    assert module.repetition_share(outputs, references, 3) == 0.0
    weights = np.array([[0.9, 0.05, 0.05, 0.0], [0.05, 0.8, 0.1, 0.05]])  # [T, S]
    assert module.never_attended(weights) == 2  # positions 2 (0.1 is not above 0.1) and 3
    assert module.never_attended(weights, threshold=0.01) == 0


def test_12_coverage_runs(tmp_path):
    module, results = run_quick("12_coverage", tmp_path)
    assert results["coverage field - sum of the weights"] < 1e-5  # the state's coverage is the running sum
    for name in module.PRESETS:
        assert results[f"{name}: showcase rows sum to 1"] < 1e-5
        for key in ("exact match", "source tokens never attended", *(f"repeats a {n}-gram" for n in module.NGRAMS)):
            assert 0.0 <= results[f"{name}: {key}"] <= 1.0
