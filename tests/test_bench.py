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
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module  # dataclasses look their module up there
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


def test_kernels_benchmark_prints_its_command_and_a_row_per_kernel_with_tiny_differences(capsys):
    import torch

    kernels = _load("kernels")
    threads = torch.get_num_threads()
    try:
        kernels.main(["--threads", "1", "--vocab", "37", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert out.startswith("command: python bench/kernels.py --threads 1 --vocab 37 --repeats 1")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "ms" not in line]
    assert [row[0].strip() for row in rows] == [
        "attention tanh [128, 15, 512]", *(f"output layer [{n}, 512] x [512, 37]" for n in (2048, 320, 64)),
        "dropout 0.3 [128, 20, 256], fwd + bwd",
        *(f"attention [128, 4, 20, 22, 64] {dtype}, fwd + bwd" for dtype in ("float32", "bfloat16")),
    ]
    # the same values (dropout: keep rates within 0.005 of each other; bf16: within its rounding)
    tolerances = [1e-4] * 4 + [5e-3, 1e-4, 0.1]
    assert all(float(row[4]) <= tolerance for row, tolerance in zip(rows, tolerances))
    assert all(float(row[3]) >= 0 for row in rows)  # one timing each: "0.00" can be printed
    assert float(rows[0][1]) > 0 and float(rows[0][2]) > 0  # the tanh's milliseconds, torch's and ours


def test_matmul_benchmark_prints_its_command_and_a_rate_per_shape_and_dtype(monkeypatch, capsys):
    import torch

    matmul = _load("matmul")
    monkeypatch.setattr(matmul, "SHAPES", ((64, 16, 37), (64, 37, 16)))  # small: the table, not the speed
    threads = torch.get_num_threads()
    try:
        matmul.main(["--threads", "1", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert out.startswith("command: python bench/matmul.py --threads 1 --repeats 1")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "GFLOP" not in line]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [
        (dtype, shape) for dtype in ("float32", "bfloat16") for shape in ("[64, 16] x [16, 37]", "[64, 37] x [37, 16]")
    ]
    assert all(float(rate) > 0 for row in rows for rate in row[2:])  # a tiny product's rate is not rounded to 0
    assert [matmul.format_rate(r) for r in (96.4, 7.25, 0.00076)] == ["96", "7.2", "0.00076"]


def test_scaling_benchmark_rejects_bad_sizes(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "scaling.py"), "--sizes", "100,x"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "--sizes" in result.stderr and "Traceback" not in result.stderr


def test_peers_quality_table_divides_ours_fp32_and_int8_speeds_by_each_row():
    peers = _load("peers")
    labels = {"ours": "ours", "opennmt": "OpenNMT-py"}
    decoded = [
        peers.Decoded("ours", "greedy", 1000, 5.0, 37.0, 1800),  # 200 sentences/s
        peers.Decoded("ours", "greedy", 1000, 2.5, 36.9, 1800, "int8"),  # 400
        peers.Decoded("opennmt", "greedy", 1000, 4.0, 36.3, 1800),  # 250
        peers.Decoded("opennmt", "beam 5", 1000, 10.0, 37.9, 1800),  # ours has no beam row: no ratio
    ]
    decoded.append(peers.Decoded("opennmt", "greedy", 1000, 20.0, 36.3, 1800, batch=1))  # ours has no batch 1 row
    rows = peers.quality_table(decoded, labels).splitlines()[2:]
    assert rows[2] == "| OpenNMT-py | fp32 | greedy | 64 | 1800 | 36.30 | 250.0 | 0.80x | 1.60x |"
    assert rows[1].endswith("| 400.0 | 0.50x | 1.00x |")
    assert rows[3].endswith("| 100.0 | - | - |")
    assert rows[4] == "| OpenNMT-py | fp32 | greedy | 1 | 1800 | 36.30 | 50.0 | - | - |"


def test_peers_setup_only_installs_and_trains_nothing(monkeypatch, capsys):
    peers = _load("peers")

    class Installed:
        label = "OpenNMT-py"

        def train(self, *args, **kwargs):
            raise AssertionError("--setup-only must not train")

    calls = []
    monkeypatch.setattr(peers, "set_up", lambda args: calls.append(args.peers) or {"opennmt": Installed()})
    monkeypatch.setattr(sys, "argv", ["peers.py", "--peers", "opennmt", "--setup-only"])
    peers.main()
    assert calls == [["opennmt"]]
    assert "set up in" in capsys.readouterr().out


def test_peers_model_transformer_gives_each_system_its_transformer_and_refuses_joey(monkeypatch, tmp_path):
    peers = _load("peers")
    ours = peers.Ours(work=tmp_path, raw=tmp_path, data=tmp_path, threads=2, model="transformer")
    onmt = peers.OpenNMT(work=tmp_path, raw=tmp_path, data=tmp_path, threads=2, model="transformer")
    assert ours.config == ROOT / "configs" / "multi30k" / "transformer.yaml"
    template = peers.yaml.safe_load(onmt.config.read_text())
    ours_model = peers.yaml.safe_load(ours.config.read_text())["model"]["transformer"]
    assert template["encoder_type"] == template["decoder_type"] == "transformer"
    assert (template["hidden_size"], template["heads"], template["enc_layers"], template["transformer_ff"]) == (
        ours_model["d_model"], ours_model["heads"], ours_model["encoder_layers"], ours_model["ffn_size"])
    assert peers.Ours(work=tmp_path, raw=tmp_path, data=tmp_path, threads=2).config.name == "bigru-attention.yaml"
    monkeypatch.setattr(sys, "argv", ["peers.py", "--model", "transformer", "--peers", "ours,joey"])
    with pytest.raises(SystemExit):
        peers.parse_args()


def test_peers_json_record_survives_a_stop_and_renders_with_report(tmp_path, capsys):
    peers = _load("peers")
    run = peers.TrainRun("ours", 1000, [peers.Reading(50, 1000.0, 10.0), peers.Reading(50, 2000.0, 5.0)], 15.0, 20.0, 900.0)
    decoded = [peers.Decoded("ours", "greedy", 1000, 4.0, 36.5, 1800)]
    record = {"command": "python bench/peers.py --json x", "threads": 2, "machine": "x86_64, 2 cores",
              "load_average": 0.1, "load_average_end": 0.2, "systems": ["ours", "opennmt"],
              "versions": {"ours": {"package": "seq2seq 0.1", "torch": "2.13.0"}},
              "quality_minutes": 30, "training": {"ours": peers.asdict(run)}, "quality_training": {"ours": peers.asdict(run)},
              "decoding": [d.as_record() for d in decoded]}
    path = tmp_path / "peers.json"
    peers.save_json(path, record)
    assert not (tmp_path / "peers.json.partial").exists()
    loaded, runs, back, quality = peers.load_json(path)
    assert runs["ours"].tokens_per_s == pytest.approx(run.tokens_per_s) and back == decoded
    assert quality["ours"].tokens_per_s == pytest.approx(run.tokens_per_s)
    peers.report(loaded, runs, back, quality)
    out = capsys.readouterr().out
    assert "INCOMPLETE: opennmt not in this record" in out and "Training over the quality run (30 minutes" in out
    assert "| ours | seq2seq 0.1 | 2.13.0 | 1,000 |" in out and "| 36.50 | 250.0 |" in out

    path.write_text('{"command": "x"}')
    with pytest.raises(SystemExit, match=r"--report .*peers.json: not a record written by bench/peers.py"):
        peers.load_json(path)


def test_peers_a_failing_system_is_reported_and_the_next_one_still_measured(monkeypatch, tmp_path, capsys):
    peers = _load("peers")

    class Fake:
        def __init__(self, name, label, fails):
            self.name, self.label, self.fails = name, label, fails

        def versions(self):
            return {"package": self.label, "torch": "2.13.0"}

        def train(self, run_dir, *, seconds, steps=None):
            if self.fails:
                raise RuntimeError("joeynmt translate failed (exit 1)\nthe end of its log")
            return peers.TrainRun(self.name, 10, [peers.Reading(50, 1000.0, 10.0)], seconds, seconds, 100.0)

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test2016.en").write_text("a\n")
    monkeypatch.setattr(peers, "set_up", lambda args: {"joey": Fake("joey", "Joey NMT", True),
                                                       "ours": Fake("ours", "ours", False)})
    out = tmp_path / "peers.json"
    monkeypatch.setattr(sys, "argv", ["peers.py", "--peers", "joey,ours", "--data", str(tmp_path / "data"),
                                      "--work", str(tmp_path / "work"), "--json", str(out)])
    peers.main()
    printed = capsys.readouterr()
    assert "Joey NMT failed, going on with the next system" in printed.err
    assert "FAILED: joey: joeynmt translate failed (exit 1)" in printed.out and "| ours | ours |" in printed.out
    assert json.loads(out.read_text())["failed"] == {"joey": "joeynmt translate failed (exit 1)"}


def test_peers_rounds_interleave_the_windows_and_pair_the_ratios(monkeypatch, tmp_path, capsys):
    """--rounds 3: ours, OpenNMT-py, ours, OpenNMT-py, ...; the table gives each system's median window
    and ours / OpenNMT-py within each round, and --report renders the same from the record."""
    peers = _load("peers")
    order = []
    speeds = {"ours": iter([3000.0, 2000.0, 2600.0]), "opennmt": iter([2000.0, 1000.0, 2000.0])}

    class Fake:
        def __init__(self, name, label):
            self.name, self.label = name, label

        def versions(self):
            return {"package": self.label, "torch": "2.13.0"}

        def train(self, run_dir, *, seconds, steps=None):
            order.append(self.name)
            return peers.TrainRun(self.name, 10, [peers.Reading(50, next(speeds[self.name]), 10.0)], seconds, seconds, 100.0)

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test2016.en").write_text("a\n")
    monkeypatch.setattr(peers, "set_up", lambda args: {"ours": Fake("ours", "ours"), "opennmt": Fake("opennmt", "OpenNMT-py")})
    out = tmp_path / "peers.json"
    monkeypatch.setattr(sys, "argv", ["peers.py", "--peers", "ours,opennmt", "--rounds", "3", "--data", str(tmp_path / "data"),
                                      "--work", str(tmp_path / "work"), "--json", str(out)])
    peers.main()
    assert order == ["ours", "opennmt"] * 3
    printed = capsys.readouterr().out
    # median windows: ours 2,600 and OpenNMT-py 2,000; per round 1.50x, 2.00x, 1.30x: the ratio is their
    # median, 1.50x, not 2,600 / 2,000
    assert "| ours | ours | 2.13.0 | 10 | 300 | 1 of 1 | 2,600 | 1.00x |" in printed
    assert "| OpenNMT-py | OpenNMT-py | 2.13.0 | 10 | 300 | 1 of 1 | 2,000 | 1.50x (paired) |" in printed
    rounds = [line for line in printed.splitlines() if line.startswith("| round") or line.startswith("| 2 ")
              or line.startswith("| median")]
    assert rounds == ["| round | ours | OpenNMT-py | ours / OpenNMT-py |", "| 2 | 2,000 | 1,000 | 2.00x |",
                      "| median | 2,600 | 2,000 | **1.50x** (1.30-2.00x) |"]
    loaded = peers.load_json(out)
    peers.report(*loaded)
    assert "| median | 2,600 | 2,000 | **1.50x** (1.30-2.00x) |" in capsys.readouterr().out
    peers.save_json(out, loaded[0])  # --decode-only writes the loaded record back: it must stay JSON


def test_peers_a_system_failing_in_a_later_round_is_left_out_after_it(monkeypatch, tmp_path, capsys):
    """--rounds 3 --quality-minutes 1: OpenNMT-py fails in round 2, so it runs no round 3 and no quality
    run; of an even number of windows the median row averages the middle two."""
    peers = _load("peers")
    calls = []
    speeds = {"ours": iter([3000.0, 2000.0, 2600.0, 2400.0]), "opennmt": iter([2000.0])}

    class Fake:
        checkpoints_on_stop = True

        def __init__(self, name, label):
            self.name, self.label = name, label

        def versions(self):
            return {"package": self.label, "torch": "2.13.0"}

        def train(self, run_dir, *, seconds, steps=None):
            calls.append((self.name, run_dir.name))
            try:
                return peers.TrainRun(self.name, 10, [peers.Reading(50, next(speeds[self.name]), 10.0)], seconds, seconds, 100.0)
            except StopIteration:
                raise RuntimeError("onmt_train failed (exit 1)\nits log") from None

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test2016.en").write_text("a\n")
    monkeypatch.setattr(peers, "set_up", lambda args: {"ours": Fake("ours", "ours"), "opennmt": Fake("opennmt", "OpenNMT-py")})
    monkeypatch.setattr(peers, "decode_test", lambda system, run_dir, **kwargs: [])
    out = tmp_path / "peers.json"
    monkeypatch.setattr(sys, "argv", ["peers.py", "--peers", "ours,opennmt", "--rounds", "3", "--quality-minutes", "1",
                                      "--data", str(tmp_path / "data"), "--work", str(tmp_path / "work"), "--json", str(out)])
    peers.main()
    assert calls == [("ours", "ours-speed"), ("opennmt", "opennmt-speed"), ("ours", "ours-speed"),
                     ("opennmt", "opennmt-speed"), ("ours", "ours-speed"), ("ours", "ours-quality")]
    printed = capsys.readouterr().out
    assert "FAILED: opennmt: round 2: onmt_train failed (exit 1)" in printed
    assert "| 2 | 2,000 | - | - |" in printed and "| median | 2,600 | 2,000 | **1.50x** (1.50-1.50x) |" in printed
    record = json.loads(out.read_text())
    assert list(record["quality_training"]) == ["ours"] and len(record["rounds"]) == 3
    two = [{"ours": peers.TrainRun("ours", 10, [peers.Reading(50, speed, 10.0)], 1.0, 1.0, 1.0)} for speed in (2600.0, 2000.0)]
    assert peers.rounds_table(two, {"ours": "ours"}).splitlines()[-1] == "| median | 2,300 |"


def test_peers_rounds_must_be_positive(monkeypatch, capsys):
    peers = _load("peers")
    monkeypatch.setattr(sys, "argv", ["peers.py", "--rounds", "0"])
    with pytest.raises(SystemExit):
        peers.parse_args()
    assert "--rounds: expected a positive number of rounds, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("name, budget", [("joey", ("training", "updates")), ("opennmt", ("train_steps",))])
def test_peers_that_save_nothing_when_stopped_get_a_step_budget_for_quality(tmp_path, name, budget):
    """Joey NMT and OpenNMT-py keep no checkpoint when stopped on the clock: their quality runs
    stop after a step budget instead (the steps their speed run does in the budget's minutes)."""
    yaml = pytest.importorskip("yaml")
    peers = _load("peers")
    system = peers.SYSTEMS[name](work=tmp_path, raw=tmp_path, data=tmp_path / "data", threads=2)
    assert not system.checkpoints_on_stop

    def value(config_path):
        config = yaml.safe_load(config_path.read_text())
        for key in budget:
            config = config.get(key) if isinstance(config, dict) else None
        return config

    for run in ("speed", "quality"):
        (tmp_path / run).mkdir()
    assert value(system._config(tmp_path / "speed", "config.yaml")) != 2274  # the speed run stops on the clock
    assert value(system._config(tmp_path / "quality", "config.yaml", 2274)) == 2274


def test_peers_decode_only_adds_other_batch_sizes_to_a_record(monkeypatch, tmp_path, capsys):
    peers = _load("peers")
    calls = []

    class Fake:
        name, label = "joey", "Joey NMT"

        def decode(self, run_dir, *, beam, batch):
            calls.append((run_dir.name, beam, batch))
            return ["a b c d"], 4.0 if batch == 1 else 0.5

    run = peers.TrainRun("joey", 10, [peers.Reading(50, 1000.0, 10.0)], 900.0, 950.0, 100.0)
    old = peers.Decoded("joey", "greedy", 1, 0.5, 1.0, 900.0)
    record = {"command": "python bench/peers.py --json x", "threads": 2, "machine": "x86_64, 2 cores",
              "load_average": 0.1, "load_average_end": 0.2, "systems": ["joey"], "quality_minutes": 15,
              "versions": {"joey": {"package": "joeynmt 2.3.0", "torch": "2.13.0"}},
              "training": {"joey": peers.asdict(run)}, "quality_training": {"joey": peers.asdict(run)},
              "decoding": [old.as_record()]}
    path = tmp_path / "peers.json"
    peers.save_json(path, record)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test2016.en").write_text("a b c d\n")
    (tmp_path / "work" / "runs" / "joey-quality").mkdir(parents=True)
    monkeypatch.setattr(peers, "set_up", lambda args: {"joey": Fake()})
    monkeypatch.setattr(sys, "argv", ["peers.py", "--peers", "joey", "--decode-only", "--decode-batches", "1",
                                      "--data", str(tmp_path / "data"), "--work", str(tmp_path / "work"),
                                      "--json", str(path)])
    peers.main()
    assert calls == [("joey-quality", 1, 1), ("joey-quality", 5, 1)]
    _, _, decoded, _ = peers.load_json(path)
    assert [(d.decoding, d.batch, d.sentences_per_s) for d in decoded] == [("greedy", 64, 2.0), ("greedy", 1, 0.25),
                                                                         ("beam 5", 1, 0.25)]
    assert decoded[1].train_seconds == 900.0 and decoded[1].sacrebleu == pytest.approx(100.0)
    out = capsys.readouterr().out
    assert "decoded again: python bench/peers.py --peers joey --decode-only" in out
    assert "| Joey NMT | fp32 | beam 5 | 1 | 900 | 100.00 | 0.2 |" in out


def test_attention_speed_benchmark_alternates_windows_and_prints_a_row_per_preset(capsys):
    attention_speed = _load("attention_speed")
    code = attention_speed.main(["--presets", "lstm-luong-general,lstm-multihead", "--rounds", "2", "--batches", "1",
                                 "--warmup", "1", "--set", "data.builtin_train_size=64", "--set", "train.batch_size=16", "--set", "train.threads=1",
                                 "--set", "model.decoder.hidden_size=16", "--set", "model.encoder.hidden_size=16",
                                 "--set", "model.decoder.attention_size=16"])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("command: python bench/attention_speed.py --presets")
    rows = [line for line in out.splitlines() if line.startswith("| lstm-")]
    assert [row.split(" | ")[0] for row in rows] == ["| lstm-attention", "| lstm-luong-general", "| lstm-multihead"]
    assert rows[0].split(" | ")[3] == "1.00"  # the reference against itself


@pytest.fixture(scope="module")
def quick_code_run(tmp_path_factory) -> Path:
    from seq2seq.cli import main

    run = tmp_path_factory.mktemp("bench") / "run"
    assert main(["train", "--quick", "--no-progress", "--preset", "lstm-attention", "--out", str(run)]) == 0
    return run


def test_grammar_speed_benchmark_prints_a_row_per_constraint_and_beam(quick_code_run):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "grammar_speed.py"), str(quick_code_run),
                             "--beams", "1,2", "--rounds", "1", "--limit", "5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"command: python bench/grammar_speed.py {quick_code_run}")
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [
        (beam, name) for beam in ("1", "2") for name in ("none", "python", "grammar")]
    assert all(row[4].strip() == "100.0%" for row in rows if row[1].strip() == "grammar")


def test_decode_ops_counts_the_operators_of_a_search_and_they_repeat(quick_code_run, tmp_path, capsys):
    """Operator counts are what a refactoring compares on a noisy machine: the same search twice gives
    the same counts, and a wider beam does more work."""
    decode_ops = _load("decode_ops")

    def counts(beam: int, name: str, *extra: str) -> dict:
        out = tmp_path / name
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", ["decode_ops.py", str(quick_code_run), "--limit", "6", "--beam", str(beam),
                                        "--repeat", "2", "--json", str(out), *extra])
            decode_ops.main()
        assert json.loads(capsys.readouterr().out.splitlines()[-1]) == json.loads(out.read_text())
        return json.loads(out.read_text())

    greedy, again, beam = counts(1, "a.json"), counts(1, "b.json"), counts(3, "c.json")
    two_batches = counts(1, "d.json", "--batch-size", "3", "--threads", "2")
    assert greedy["by_operator"] == again["by_operator"]
    assert two_batches["operators"] > greedy["operators"]  # the search ran twice, over 3 sources each
    assert sum(greedy["by_operator"].values()) == greedy["operators"] > 0
    assert greedy["by_operator"]["aten::lstm"] >= 1 and greedy["python_calls"] > 0
    assert beam["by_operator"].get("aten::topk", 0) > greedy["by_operator"].get("aten::topk", 0)
    # every operator called has a time, and the total is theirs
    assert set(greedy["self_ms_by_operator"]) == set(greedy["by_operator"])
    assert greedy["self_ms"] == pytest.approx(sum(greedy["self_ms_by_operator"].values())) and greedy["self_ms"] > 0
    assert greedy["wall_ms"] > 0


def test_against_commit_ops_lists_the_operators_whose_counts_differ(monkeypatch, tmp_path, capsys):
    """--no-training --ops: decoding readings only, then one line per search naming each changed operator."""
    against = _load("against_commit")
    earlier = tmp_path / "tree-earlier"
    monkeypatch.setattr(against, "worktree", lambda commit, work: earlier)
    monkeypatch.setattr(against, "git", lambda *args: "abc1234" if args[0] == "rev-parse" else "")
    monkeypatch.setattr(against, "training_speed", lambda *args: pytest.fail("--no-training still trained"))
    monkeypatch.setattr(against, "decoding_speed", lambda tree, run, out: {"greedy, batch 64": 10.0})
    work = {against.REPO: {"operators": 12, "python_calls": 30, "by_operator": {"aten::mm": 4, "aten::index": 8},
                           "self_ms": 9.0, "self_ms_by_operator": {"aten::mm": 6.0, "aten::index": 3.0}, "wall_ms": 12.0},
            earlier: {"operators": 11, "python_calls": 25, "by_operator": {"aten::mm": 4, "aten::index_select": 7},
                      "self_ms": 10.0, "self_ms_by_operator": {"aten::mm": 5.5, "aten::index_select": 4.5}, "wall_ms": 13.0}}
    monkeypatch.setattr(against, "operations", lambda tree, run, beam: work[tree])
    monkeypatch.setattr(sys, "argv", ["against_commit.py", "abc1234", "--decode", str(tmp_path / "run"), "--ops",
                                      "--no-training", "--rounds", "1", "--work", str(tmp_path)])
    against.main()
    printed = capsys.readouterr().out
    assert ("work, greedy (earlier -> this tree): operators 11 -> 12, Python calls 25 -> 30; differing operators: "
            "aten::index 0 -> 8, aten::index_select 7 -> 0; time in the operators 10 -> 9 ms (**0.900x**; moved most, "
            "ms: aten::index_select 4.5 -> 0.0, aten::index 0.0 -> 3.0, aten::mm 5.5 -> 6.0); a search unprofiled 13 -> 12 ms") in printed
    assert "| training" not in printed and "greedy, batch 64 | 10.0 | 10.0 | sentences/s | **1.000x**" in printed


def test_error_analysis_puts_every_output_in_one_class(quick_code_run, capsys):
    analysis = _load("error_analysis")
    from seq2seq.data.tokenizers import PythonTokenizer

    tokenize = PythonTokenizer().tokenize
    kinds = [analysis.classify(out, ref, src, tokenize=tokenize, unit="program") for out, ref, src in [
        ("x = 1", "x  =  1", "set x to 1"), ("", "x = 1", "x"), ("f(a", "f(a)", "call f"), ("f(a))", "f(a)", "call f"),
        ("x = = 1", "x = 1", "x"), ("g(a)", "f(a)", "call f on a"), ("f(b)", "f('v')", "call f with 'v'"),
        ("f(b, a)", "f(a, b)", "call f")]]
    assert kinds == ["exact", "empty", "syntax: unclosed bracket", "syntax: unmatched closer", "syntax: other",
                     "wrong call", "missing value", "other"]
    # an output the search stopped at max_len is a runaway, whatever else is wrong with it
    assert analysis.classify("f([2, 2, 2, 2", "f([2, 5])", "call f on [2, 5]", tokenize=tokenize, unit="program",
                             finished=False) == "ran to max_len"
    assert analysis.classify("x = 1", "x = 1", "x", tokenize=tokenize, unit="program", finished=False) == "exact"
    assert [analysis.repeats_a_literal(src) for src in ("sum of 2, 5 and 2", "print 'a' then 'a'", "sum of 2, 25 and 52",
                                                        "print 'a' then 'b'")] == [True, True, False, False]
    from types import SimpleNamespace

    examples = [SimpleNamespace(src="add 2 and 2 to x", tgt="x += 2 + 2"), SimpleNamespace(src="set x to 1", tgt="x = max(1, 2)")]
    found = [SimpleNamespace(text="x += 2 + 2 + 2 + 2 + 2"), SimpleNamespace(text="x = max(1, 2)")]
    analysis.print_runaways(examples, found, ["ran to max_len", "exact"], tokenize)
    printed = capsys.readouterr().out
    assert "without the 1 outputs that ran to max_len 100.00" in printed, printed
    assert "a literal twice: 100.0% of those 1, 50.0% of all inputs; their mean length 6.0 words, all inputs' 5.0" in printed
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "error_analysis.py"), str(quick_code_run),
                             "--split", "valid", "--constrain", "grammar"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    counts = [int(line.split("|")[2]) for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line
              and "count" not in line]
    assert len(counts) == len(analysis.CLASSES) and sum(counts) == 30  # the quick task's validation split
    assert counts[3] + counts[4] + counts[5] == 0  # under the grammar nothing fails to parse


def test_against_commit_alternates_the_trees_and_reports_median_paired_ratios(monkeypatch, tmp_path, capsys):
    """Each round runs both trees, the earlier commit going first every other round; the table gives
    each tree's median and the median of the per-round ratios (this tree / earlier)."""
    against = _load("against_commit")
    earlier = tmp_path / "tree-earlier"
    calls = []
    speeds = {against.REPO: iter([1100.0, 900.0, 1000.0]), earlier: iter([1000.0, 1000.0, 800.0])}

    def training_speed(tree, config, overrides, batches):
        calls.append("here" if tree == against.REPO else "earlier")
        assert (config, overrides, batches) == ("configs/x.yaml", ["train.threads=1"], 7)
        return next(speeds[tree])

    monkeypatch.setattr(against, "worktree", lambda commit, work: earlier)
    monkeypatch.setattr(against, "training_speed", training_speed)
    monkeypatch.setattr(against, "git", lambda *args: "abc1234" if args[0] == "rev-parse" else "")
    monkeypatch.setattr(sys, "argv", ["against_commit.py", "abc1234", "--config", "configs/x.yaml", "--set",
                                      "train.threads=1", "--batches", "7", "--rounds", "3", "--work", str(tmp_path)])
    against.main()
    assert calls == ["here", "earlier", "earlier", "here", "here", "earlier"]
    printed = capsys.readouterr().out
    assert printed.startswith("command: python bench/against_commit.py abc1234 --config configs/x.yaml")
    # medians 1,000 / 1,000; ratios 1.100, 0.900, 1.250: their median is 1.100x, not 1,000 / 1,000
    assert "| training, configs/x.yaml | 1,000.0 | 1,000.0 | target tokens/s | **1.100x** (1.100, 0.900, 1.250) |" in printed


def test_against_commit_refuses_a_tree_that_imports_another_package(tmp_path):
    """A tree whose src/ holds no seq2seq must not be timed with the installed package instead."""
    against = _load("against_commit")
    (tmp_path / "src").mkdir()
    with pytest.raises(SystemExit, match="not from its own src/|No module named"):
        against.run_from(tmp_path, "train_speed.py", [])


def test_against_commit_no_training_refuses_a_training_config(monkeypatch, tmp_path, capsys):
    against = _load("against_commit")
    monkeypatch.setattr(sys, "argv", ["against_commit.py", "abc1234", "--decode", str(tmp_path), "--no-training",
                                      "--config", "configs/x.yaml"])
    with pytest.raises(SystemExit):
        against.main()
    assert "--no-training times no training: leave out --config and --set" in capsys.readouterr().err


def test_openblas_linear_computes_what_nn_linear_computes_and_restores_torch():
    """The BLAS A/B compares libraries, not arithmetic: NumPy's linear gives nn.Linear's output and
    gradients, and switching back leaves nn.Linear as it was."""
    import torch

    blas = _load("openblas_linear")
    from seq2seq.models import linear as aligned_rows

    min_rows = aligned_rows.MIN_ROWS
    torch.manual_seed(0)
    layer = torch.nn.Linear(12, 7)
    x = torch.randn(3, 5, 12, requires_grad=True)
    expected = layer(x)
    expected.square().sum().backward()
    grads = x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()
    x.grad = layer.weight.grad = layer.bias.grad = None
    blas.use_numpy(True)
    try:
        assert torch.nn.Linear.forward is not blas.TORCH_FORWARD
        got = layer(x)
        got.square().sum().backward()
        # the output layer's path (models/linear.py, at least MIN_ROWS rows) goes through NumPy too
        rows = aligned_rows.linear(layer, torch.randn(min_rows + 2, 12, requires_grad=True))
        assert rows.grad_fn.next_functions[0][0].name() == "NumpyLinearBackward"
    finally:
        blas.use_numpy(False)
    assert torch.nn.Linear.forward is blas.TORCH_FORWARD and aligned_rows.MIN_ROWS == min_rows
    assert got.shape == (3, 5, 7) and torch.allclose(got, expected, atol=1e-5)
    for ours, theirs in zip((x.grad, layer.weight.grad, layer.bias.grad), grads):
        assert torch.allclose(ours, theirs, atol=1e-4)


def test_train_speed_groups_the_profiled_products_by_shape():
    """``train_speed.py --profile`` ends with the matrix products by inner shape and their rate: the
    two [*, 32] x [32, 16] products (one ``mm``, one ``addmm``) and a ``bmm`` each land in their own row."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    train_speed = _load("train_speed")
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        torch.mm(a, b)
        torch.mm(a[:48], b)
        torch.addmm(torch.zeros(16), a, b)
        torch.bmm(torch.randn(3, 5, 8), torch.randn(3, 8, 7))
    rows = {tuple(line.split()[:4]) for line in train_speed.product_table(profiler.events()).splitlines()[2:]}
    assert rows == {("mm", "32", "16", "2"), ("addmm", "32", "16", "1"), ("bmm", "8", "7", "1")}
