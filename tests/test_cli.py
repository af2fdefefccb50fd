"""The command line end to end in a temporary folder, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import brackets_balance, real_data
from seq2seq.cli import main

FAST = ["--quick", "--no-progress"]


def run_cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m seq2seq`` in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "seq2seq", *args], input=stdin, capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *FAST, "--preset", "lstm-attention", "--out", str(run_dir)]) == 0
    return run_dir


def test_bad_device_is_a_clean_error_and_writes_nothing(tmp_path):
    out = tmp_path / "r"
    _assert_clean_error(run_cli("train", "--quick", "--set", "train.device=bogus", "--out", str(out)), "train.device")
    _assert_clean_error(run_cli("train", "--quick", "--set", "train.device=cuda:7", "--out", str(out)), "cuda:7")
    assert not (out / "run.json").exists()


def test_data_folder_name_is_not_parsed_as_yaml(tmp_path):
    data = tmp_path / "2024"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(f'{{"src": "set x to {i}", "tgt": "x = {i}"}}\n' for i in range(12)))
    out = tmp_path / "r"
    code = main(["train", "--data", str(data), *FAST, "--set", "data.src_fields=[src]", "--set", "data.tgt_field=tgt",
                 "--set", "data.valid_size=3", "--out", str(out), "--no-eval"])
    assert code == 0
    assert f"path: {data}" in (out / "config.yaml").read_text()


def test_train_writes_a_self_describing_run_dir(trained_run, capsys):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.yaml", "src_vocab.json", "tgt_vocab.json", "best.safetensors", "last.safetensors", "metrics.jsonl", "run.json"} <= names
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]


def test_generate_from_argument_file_and_stdin(trained_run, tmp_path, capsys):
    assert main(["generate", str(trained_run), "add 3 to total", "--scores"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.count("\t") == 2 and line.split("\t")[2] in ("parses", "syntax-error")
    inputs = tmp_path / "in.txt"
    inputs.write_text("add 3 to total\n\nprint the length of names\n")
    assert main(["generate", str(trained_run), "--file", str(inputs)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # the blank line is kept blank
    result = run_cli("generate", str(trained_run), stdin="assign 5 to x\nsort scores\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 2


def test_evaluate_prints_metrics_and_writes_predictions(trained_run, tmp_path, capsys):
    output = tmp_path / "pred.txt"
    assert main(["evaluate", str(trained_run), "--split", "valid", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "exact match" in out and "BLEU" in out and "parse rate" in out and "source length" in out
    assert len(output.read_text().splitlines()) == 30
    assert json.loads((trained_run / "eval_valid.json").read_text())["count"] == 30
    # another batch size decodes the same outputs and keeps its own report
    assert main(["evaluate", str(trained_run), "--split", "valid", "--batch-size", "1", "--output", str(tmp_path / "b1.txt")]) == 0
    assert (tmp_path / "b1.txt").read_text() == output.read_text()
    assert json.loads((trained_run / "eval_valid_batch1.json").read_text())["batch_size"] == 1
    # so do several batches decoded at once; the report says how many
    assert main(["evaluate", str(trained_run), "--split", "valid", "--batch-size", "4", "--workers", "3",
                 "--output", str(tmp_path / "w3.txt")]) == 0
    assert (tmp_path / "w3.txt").read_text() == output.read_text()
    assert json.loads((trained_run / "eval_valid_batch4.json").read_text())["workers"] == 3


def test_resume_continues_from_the_last_epoch(trained_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    capsys.readouterr()
    assert main(["train", "--resume", str(copy), "--set", "train.epochs=3", "--no-progress", "--no-eval"]) == 0
    assert "stopped: train.epochs (3) done" in capsys.readouterr().out
    epochs = [json.loads(line)["epoch"] for line in (copy / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line and '"kind": "epoch"' in line]
    assert epochs == [1, 2, 3]


def test_compare_quick_writes_table_report_and_figures(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for preset in ("rnn", "lstm", "lstm-attention"):
        assert f"| {preset} |" in printed
    assert "parameters" in printed and "EM len" in printed
    rows = json.loads((out / "results.json").read_text())
    # the second table: output length and outputs cut at max_len for every model, attention's
    # over- and under-translation where there is attention ("-" for the others)
    second = printed[printed.index("| model | output/reference length |"):]
    for row in rows:
        test = row["test"]
        cells = next(line for line in second.splitlines() if line.startswith(f"| {row['preset']} |")).strip(" |").split(" | ")
        expected = [f"{test['length_ratio']:.3f}", f"{test['stopped_at_max_len'] / test['count']:.1%}"]
        expected += ([f"{test['coverage'][key]:.1%}" for key in ("repeated_ngrams", "unattended_source")]
                     if row["preset"] == "lstm-attention" else ["-", "-"])
        assert cells[1:] == expected, (row["preset"], cells)
    report = (out / "comparison.md").read_text()
    assert "| model | output/reference length |" in report
    assert "seq2seq compare --quick" in report
    figures = ("loss_curves.png", "quality_by_length.png", "grad_norm.png", "attention_lstm-attention.png")
    for figure in figures:
        assert (out / figure).stat().st_size > 1000
        assert f"]({figure})" in report
    assert not (out / "attention_rnn.png").exists() and not (out / "attention_lstm.png").exists()  # no attention
    assert [r["preset"] for r in rows] == ["rnn", "lstm", "lstm-attention"]
    assert rows[0]["parameters"] < rows[1]["parameters"] < rows[2]["parameters"]
    # Gradient norms before clipping: logged per step window, summarised per model.
    for row in rows:
        assert 0 < row["grad_norm_mean"] <= row["grad_norm_max"] and 0 <= row["clipped_fraction"] <= 1
    records = [json.loads(line) for line in (out / "rnn" / "metrics.jsonl").read_text().splitlines()]
    epochs = [m for m in records if m["kind"] == "epoch"]
    assert epochs and all({"grad_norm_mean", "grad_norm_max", "clipped_fraction"} <= set(m) for m in epochs)
    # The HTML report stands alone: every figure embedded, no external reference, well formed.
    from html.parser import HTMLParser

    page = (out / "comparison.html").read_text()
    sources, links = [], []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if "src" in attrs:
                sources.append(attrs["src"])
            if "href" in attrs:
                links.append(attrs["href"])

    Collect().feed(page)
    assert len(sources) == len(figures) and all(src.startswith("data:image/png;base64,") for src in sources)
    assert not links and "http" not in page.replace("data:image", "")
    assert "<td>lstm-attention</td>" in page and "steps clipped" in page
    assert page.count("<table>") == 2 and "outputs stopped at max_len" in page


def test_help_for_every_subcommand():
    for command in ("train", "generate", "evaluate", "compare", "serve"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0


# ----------------------------------------------------------------------------- bad input
def _assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_missing_data_folder(tmp_path):
    _assert_clean_error(run_cli("train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")), "nope", "not found")


@pytest.mark.parametrize(
    ("second_line", "needles"),
    [
        ('{"src": "c d", "tgt": ', ("train.jsonl:2:", "malformed JSON")),  # malformed JSON line
        ('{"src": "   ", "tgt": "y = 2"}', ("train.jsonl:2:", "source")),  # empty source
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path, second_line, needles):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"src": "a b", "tgt": "x = 1"}\n' + second_line + "\n")
    result = run_cli("train", "--quick", "--data", str(data), "--set", "data.src_fields=[src]", "--set", "data.tgt_field=tgt",
                     "--out", str(tmp_path / "r"))
    _assert_clean_error(result, *needles)


def test_unknown_config_key_lists_valid_keys(tmp_path):
    result = run_cli("train", "--quick", "--set", "train.epoks=3", "--out", str(tmp_path / "r"))
    _assert_clean_error(result, "train.epoks", "epochs", "batch_size")
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  encoder:\n    hiden_size: 3\n")
    _assert_clean_error(run_cli("train", str(config), "--quick", "--out", str(tmp_path / "r")), "model.encoder.hiden_size", "hidden_size")


def test_missing_config_file_and_run_dir(tmp_path):
    _assert_clean_error(run_cli("train", str(tmp_path / "none.yaml"), "--quick", "--out", str(tmp_path / "r")), "none.yaml", "not found")
    _assert_clean_error(run_cli("generate", str(tmp_path / "norun"), "hello"), "norun", "not found")
    _assert_clean_error(run_cli("evaluate", str(tmp_path)), "not a run directory")


def test_existing_run_is_not_overwritten(trained_run):
    before = (trained_run / "best.safetensors").read_bytes()
    _assert_clean_error(run_cli("train", "--quick", "--out", str(trained_run)), "already holds a run", "--overwrite")
    assert (trained_run / "best.safetensors").read_bytes() == before


def test_generate_keeps_line_alignment_and_reports_bad_bytes(trained_run, tmp_path, capsys):
    inputs = tmp_path / "in.txt"
    inputs.write_text("add 3 to total\n\nsort scores\n")
    assert main(["generate", str(trained_run), "--file", str(inputs)]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[1] == "" and lines[0] and lines[2]
    inputs.write_bytes(b"ok line\nbad \xff byte\n")
    _assert_clean_error(run_cli("generate", str(trained_run), "--file", str(inputs)), "in.txt:2:", "UTF-8")
    _assert_clean_error(run_cli("generate", str(trained_run), "--file", str(tmp_path)), str(tmp_path))
    _assert_clean_error(run_cli("generate", str(trained_run), "x", "--device", "bogus"), "bogus")


def test_resume_refuses_other_sources(trained_run):
    _assert_clean_error(run_cli("train", "--resume", str(trained_run), "--preset", "rnn"), "--preset")


def test_empty_generate_input(trained_run):
    _assert_clean_error(run_cli("generate", str(trained_run), "   "), "empty source")
    _assert_clean_error(run_cli("generate", str(trained_run), stdin="\n\n"), "no input lines")


# ----------------------------------------------------------------------------- real data
def test_train_on_conala_end_to_end(tmp_path, capsys):
    conala = real_data("conala")
    run_dir = tmp_path / "conala"
    code = main(["train", "--preset", "lstm-attention", "--data", str(conala), *FAST, "--set", "train.epochs=1", "--out", str(run_dir)])
    assert code == 0
    out = capsys.readouterr().out
    assert "test: 500 examples" in out
    config = (run_dir / "config.yaml").read_text()
    assert "format: conala" in config


def test_resume_refuses_to_change_the_model(trained_run, tmp_path):
    _assert_clean_error(run_cli("train", "--resume", str(trained_run), "--set", "model.encoder.hidden_size=8"),
                        "cannot change model.encoder.hidden_size")


def test_generate_with_beam_prints_an_nbest_list(trained_run, capsys):
    assert main(["generate", str(trained_run), "add 3 to total", "--beam", "4", "--nbest", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[:2] for line in lines] == [["1", "1"], ["1", "2"], ["1", "3"]]
    scores = [float(line.split("\t")[3]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    assert len({line.split("\t")[2] for line in lines}) == 3  # distinct hypotheses
    _assert_clean_error(run_cli("generate", str(trained_run), "x", "--beam", "2", "--nbest", "3"), "nbest=3", "beam size 2")


def test_evaluate_with_beam(trained_run, capsys):
    assert main(["evaluate", str(trained_run), "--split", "valid", "--beam", "3"]) == 0
    assert "(beam 3)" in capsys.readouterr().out
    assert json.loads((trained_run / "eval_valid_beam3.json").read_text())["beam_size"] == 3


def test_no_repeat_ngram_size_in_evaluate_generate_and_the_config(trained_run, tmp_path, capsys):
    from seq2seq.data.tokenizers import PythonTokenizer

    def repeats_a_token(line: str) -> bool:
        tokens = PythonTokenizer().tokenize(line)
        return len(set(tokens)) < len(tokens)

    plain, output = tmp_path / "plain.txt", tmp_path / "pred.txt"
    assert main(["evaluate", str(trained_run), "--split", "valid", "--output", str(plain)]) == 0
    assert any(map(repeats_a_token, plain.read_text().splitlines()))  # the ban has something to remove
    assert main(["evaluate", str(trained_run), "--split", "valid", "--no-repeat-ngram-size", "1", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "(greedy, no repeated 1-grams)" in printed and "outputs stopped at max_len" in printed
    report = json.loads((trained_run / "eval_valid_norepeat1.json").read_text())  # the plain report stays as it was
    assert report["no_repeat_ngram_size"] == 1 and report["count"] == 30
    assert not any(map(repeats_a_token, output.read_text().splitlines()))
    assert output.read_text() != plain.read_text()
    assert main(["generate", str(trained_run), "add 3 to total", "--no-repeat-ngram-size", "1"]) == 0
    tokens = PythonTokenizer().tokenize(capsys.readouterr().out.strip())
    assert tokens and len(set(tokens)) == len(tokens)  # no token twice
    _assert_clean_error(run_cli("generate", str(trained_run), "x", "--sample", "--no-repeat-ngram-size", "2"),
                        "not for --sample")
    _assert_clean_error(run_cli("evaluate", str(trained_run), "--no-repeat-ngram-size", "-1"),
                        "expected 0 or a positive integer, got -1")
    _assert_clean_error(run_cli("evaluate", str(trained_run), "--no-repeat-ngram-size", "two"),
                        "expected 0 or a positive integer, got 'two'")
    for command in (["evaluate", str(trained_run)], ["generate", str(trained_run), "add 3 to total"]):
        _assert_clean_error(run_cli(*command, "--constrain", "grammar", "--no-repeat-ngram-size", "3"),
                            "cannot be combined with the grammar constraint")
    _assert_clean_error(run_cli("train", "--quick", "--set", "decode.no_repeat_ngram_size=-1", "--out", str(tmp_path / "r")),
                        "decode.no_repeat_ngram_size")


def test_length_penalty_in_evaluate_generate_and_the_config(trained_run, tmp_path, capsys, monkeypatch):
    import shutil

    import seq2seq.evaluation.evaluate as evaluation
    import seq2seq.translator as translator

    searches = []  # what each search was asked for: (beam, length penalty, alpha)

    def recording(module):
        search = module.decode_sources

        def decode_sources(*args, **kwargs):
            searches.append((kwargs["beam_size"], kwargs["length_penalty"], kwargs["alpha"]))
            return search(*args, **kwargs)

        monkeypatch.setattr(module, "decode_sources", decode_sources)

    recording(evaluation)
    recording(translator)
    assert main(["evaluate", str(trained_run), "--split", "valid", "--beam", "3"]) == 0
    assert main(["evaluate", str(trained_run), "--split", "valid", "--beam", "3", "--length-penalty", "average",
                 "--alpha", "1.5"]) == 0
    assert "(beam 3, average length penalty 1.5)" in capsys.readouterr().out
    assert searches == [(3, "none", 0.6), (3, "average", 1.5)]
    plain = json.loads((trained_run / "eval_valid_beam3.json").read_text())  # kept: the penalised report has its own
    penalised = json.loads((trained_run / "eval_valid_beam3_average1.5.json").read_text())
    assert (plain["length_penalty"], plain["alpha"], penalised["length_penalty"], penalised["alpha"]) == ("none", None, "average", 1.5)

    # a run whose config asks for a penalty: evaluate, generate and the API take it unless told otherwise
    run = tmp_path / "penalised-run"
    shutil.copytree(trained_run, run)
    config = (run / "config.yaml").read_text()
    assert "length_penalty: none" in config  # every run records it
    (run / "config.yaml").write_text(config.replace("length_penalty: none", "length_penalty: gnmt"))
    searches.clear()
    assert main(["evaluate", str(run), "--split", "valid", "--beam", "2"]) == 0
    assert main(["evaluate", str(run), "--split", "valid", "--beam", "2", "--length-penalty", "none"]) == 0
    assert main(["evaluate", str(run), "--split", "valid"]) == 0  # greedy compares no lengths
    assert main(["generate", str(run), "add 3 to total", "--beam", "2"]) == 0
    assert main(["generate", str(run), "add 3 to total", "--beam", "2", "--alpha", "2"]) == 0
    assert searches == [(2, "gnmt", 0.6), (2, "none", 0.6), (1, "none", 0.6), (2, "gnmt", 0.6), (2, "gnmt", 2.0)]
    assert json.loads((run / "eval_valid_beam2_gnmt0.6.json").read_text())["length_penalty"] == "gnmt"
    _assert_clean_error(run_cli("evaluate", str(run), "--beam", "2", "--alpha", "-1"), "--alpha", "expected a number >= 0, got -1")
    _assert_clean_error(run_cli("generate", str(run), "x", "--beam", "2", "--length-penalty", "long"), "--length-penalty")
    _assert_clean_error(run_cli("train", "--quick", "--set", "decode.alpha=-0.5", "--out", str(tmp_path / "r")), "decode.alpha")


def test_python_constraint_prefers_parseable_beam_outputs(trained_run, tmp_path, capsys):
    from seq2seq.translator import Translator

    translator = Translator.from_run_dir(trained_run)
    texts = ["add 3 to total", "print the length of names", "sort scores", "create a list named x containing 1 , 2 and 3"]
    beams = translator.generate_nbest(texts, beam_size=4, nbest=4, constrain="python")
    for alternatives in beams:
        assert all(brackets_balance(g.tokens) for g in alternatives if g.finished)  # pruned during the search
        if any(g.parses and g.finished for g in alternatives):
            assert alternatives[0].parses  # a parseable hypothesis was in the beam, so the best one parses
    png = tmp_path / "attention.png"
    assert main(["generate", str(trained_run), "add 3 to total", "--beam", "3", "--constrain", "python", "--plot-attention", str(png)]) == 0
    assert png.stat().st_size > 1000
    assert main(["evaluate", str(trained_run), "--split", "valid", "--beam", "2", "--constrain", "python"]) == 0
    assert "python constraint" in capsys.readouterr().out
    assert (trained_run / "eval_valid_beam2_python.json").is_file()
    for generation in translator.generate(texts, constrain="python"):  # greedy: bracket pruning only
        if generation.finished:
            assert brackets_balance(generation.tokens), generation.text


def test_grammar_constraint_writes_only_code_that_parses(trained_run, capsys):
    from seq2seq.data.python_syntax import parses
    from seq2seq.translator import Translator

    translator = Translator.from_run_dir(trained_run)
    texts = ["add 3 to total", "print the length of names", "sort scores", "create a list named x containing 1 , 2 and 3"]
    for generation in translator.generate(texts, constrain="grammar"):
        assert parses(generation.text) or not generation.text, generation.text  # unfinished: closed or shortened
    for alternatives in translator.generate_nbest(texts, beam_size=3, nbest=3, constrain="grammar"):
        assert all(parses(g.text) for g in alternatives if g.finished)
    assert main(["evaluate", str(trained_run), "--split", "valid", "--constrain", "grammar"]) == 0
    assert "grammar constraint" in capsys.readouterr().out
    summary = json.loads((trained_run / "eval_valid_grammar.json").read_text())
    assert summary["constrain"] == "grammar" and summary["parse_rate"] == 1.0
    # decode.constrain in the run's config is the default of evaluate and generate; --constrain none overrides it
    config = trained_run / "config.yaml"
    original = config.read_text()
    try:
        config.write_text(original.replace("constrain: none", "constrain: grammar"))
        assert Translator.from_run_dir(trained_run).run.config.decode.constrain == "grammar"
        assert main(["evaluate", str(trained_run), "--split", "valid"]) == 0
        assert "grammar constraint" in capsys.readouterr().out
        assert main(["evaluate", str(trained_run), "--split", "valid", "--constrain", "none"]) == 0
        assert "(greedy)" in (out := capsys.readouterr().out) and "grammar constraint" not in out
    finally:
        config.write_text(original)


def test_generate_sampling_and_decoding_plots(trained_run, tmp_path, capsys):
    args = ["generate", str(trained_run), "add 3 to total", "--sample", "--seed", "7", "--top-k", "5", "--temperature", "0.8"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first  # seeded sampling is reproducible
    _assert_clean_error(run_cli("generate", str(trained_run), "x", "--sample", "--beam", "3"), "--sample")
    _assert_clean_error(run_cli("generate", str(trained_run), "x", "--sample", "--top-p", "0"), "top_p")
    probs, nbest = tmp_path / "probs.png", tmp_path / "nbest.png"
    assert main(["generate", str(trained_run), "add 3 to total", "--beam", "4", "--nbest", "3",
                 "--plot-probs", str(probs), "--plot-step", "2", "--plot-nbest", str(nbest)]) == 0
    assert probs.stat().st_size > 1000 and nbest.stat().st_size > 1000
    _assert_clean_error(run_cli("generate", str(trained_run), "add 3 to total", "--plot-probs", str(probs),
                                "--plot-step", "99"), "--plot-step 99")


def test_prefer_accepted_is_stable_and_never_drops():
    from seq2seq.decoding.constraints import prefer_accepted

    assert prefer_accepted(["a", "B", "c", "D"], str.isupper) == ["B", "D", "a", "c"]
    assert prefer_accepted(["a", "c"], str.isupper) == ["a", "c"]


def test_int8_quantized_model_scores_and_decodes_like_the_float_model(tmp_path, capsys) -> None:
    """int8 weights change the scores by a fraction of a percent. Exact equality of the outputs
    is not the property: on this barely trained model near-ties abound, and a search may resolve
    one the other way under int8 weights (a change of the training's random stream once flipped one)."""
    from seq2seq.translator import Translator

    out = tmp_path / "run"
    assert main(["train", "--quick", "--no-progress", "--no-eval", "--preset", "lstm-attention-copy", "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--split", "test", "--quantize", "int8"]) == 0
    assert main(["evaluate", str(out), "--split", "test"]) == 0
    assert "exact match" in capsys.readouterr().out
    summary = json.loads((out / "eval_test_int8.json").read_text())
    plain = json.loads((out / "eval_test.json").read_text())
    assert summary["quantize"] == "int8" and plain["quantize"] is None
    assert abs(summary["perplexity"] / plain["perplexity"] - 1) < 0.01  # teacher-forced scores of the references
    texts = ["create a list named scores containing 3 , 17 and 42", "sort scores in reverse order"]
    quantized = Translator.from_run_dir(out, quantize="int8")
    assert ".quantized." in type(quantized.run.model.decoder.output).__module__  # int8 kernels, not a float copy
    float_best = Translator.from_run_dir(out).generate(texts, beam_size=3)
    for generation, reference in zip(quantized.generate(texts, beam_size=3), float_best):
        assert generation.text == reference.text or abs(generation.score - reference.score) < 0.5 * abs(reference.score)


def test_compare_with_several_seeds_reports_mean_and_spread(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *FAST, "--presets", "rnn,lstm-attention", "--seeds", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| rnn (2 seeds) |" in printed and " ± " in printed
    rows = json.loads((out / "results.json").read_text())
    # EM by input length and seconds per epoch: mean ± sd over the seeds too, as the seeds' records give them
    row = next(line for line in printed.splitlines() if line.startswith("| lstm-attention (2 seeds) |"))
    cells = row.strip(" |").split(" | ")
    seeds = next(r for r in rows if r["preset"] == "lstm-attention")["seeds"]
    for i, cell in enumerate(cells[-3:]):
        values = [100 * seed["test"]["by_length"][i]["exact_match"] for seed in seeds]
        mean, sd = statistics.mean(values), statistics.stdev(values)
        assert cell == f"{mean:.1f}% ± {sd:.1f}% (n={seeds[0]['test']['by_length'][i]['count']})", (cell, values)
    per_epoch = [seed["seconds_per_epoch"] for seed in seeds]
    assert cells[3] == f"{statistics.mean(per_epoch):.1f} ± {statistics.stdev(per_epoch):.1f}"
    for row in rows:
        seeds = row["seeds"]
        assert len(seeds) == 2 and seeds[0]["run_dir"] != seeds[1]["run_dir"]
        assert seeds[0]["valid_perplexity"] != seeds[1]["valid_perplexity"]  # different seeds, different runs
    configs = [(out / "rnn" / f"seed{k}" / "config.yaml").read_text() for k in (42, 43)]
    assert "seed: 42" in configs[0] and "seed: 43" in configs[1]
    with pytest.raises(SystemExit) as stopped:  # argparse refuses it: one line, exit status 2
        main(["compare", *FAST, "--seeds", "0", "--out", str(out)])
    assert stopped.value.code == 2 and "expected a positive integer" in capsys.readouterr().err


def test_compare_resume_finishes_an_interrupted_comparison_and_adds_presets(tmp_path, capsys):
    """--resume continues each run where it stopped, with the same result as an uninterrupted
    comparison, evaluates finished runs without training them again, and refuses changed settings.
    The uninterrupted comparison trains with --jobs 2 (two worker processes): the same runs."""
    fast = [*FAST, "--set", "train.threads=1"]  # the same threads in every invocation: the same numbers
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["compare", *fast, "--presets", "rnn", "--seeds", "2", "--jobs", "2", "--out", str(whole)]) == 0  # 2 epochs
    # "interrupted": the runs stopped after epoch 1 (train.epochs is one of the settings a resume may change)
    assert main(["compare", *fast, "--presets", "rnn", "--seeds", "2", "--set", "train.epochs=1", "--out", str(resumed)]) == 0
    capsys.readouterr()
    assert main(["compare", *fast, "--presets", "rnn", "--seeds", "2", "--out", str(resumed)]) == 2  # refused before training
    error = capsys.readouterr().err
    assert f"{resumed / 'rnn' / 'seed42'} (and 1 more) already holds a run; pass --resume" in error
    assert main(["compare", *fast, "--presets", "rnn", "--seeds", "2", "--resume", "--out", str(resumed)]) == 0
    expected, got = (json.loads((out / "results.json").read_text())[0]["seeds"] for out in (whole, resumed))
    for a, b in zip(expected, got):
        assert b["epochs"] == 2.0  # the table counts the epochs trained before the interruption too
        assert (b["valid_perplexity"], b["test"]["exact_match"], b["test"]["bleu"]) == (
            a["valid_perplexity"], a["test"]["exact_match"], a["test"]["bleu"])

    # adding a preset: the finished rnn runs are evaluated again, not retrained
    weights = resumed / "rnn" / "seed42" / "best.safetensors"
    before = weights.stat().st_mtime_ns
    assert main(["compare", *fast, "--presets", "rnn,lstm-attention", "--seeds", "2", "--resume", "--out", str(resumed)]) == 0
    printed = capsys.readouterr().out
    assert "| rnn (2 seeds) |" in printed and "| lstm-attention (2 seeds) |" in printed
    assert weights.stat().st_mtime_ns == before
    assert (resumed / "lstm-attention" / "seed43" / "best.safetensors").is_file()

    # a setting that the saved runs were not trained with: one line naming it, nothing rewritten
    assert main(["compare", *fast, "--presets", "rnn", "--seeds", "2", "--resume", "--set", "train.learning_rate=0.01",
                 "--out", str(resumed)]) == 2
    assert "cannot change train.learning_rate when resuming" in capsys.readouterr().err
    assert weights.stat().st_mtime_ns == before
    with pytest.raises(SystemExit):  # argparse: the two exclude each other
        main(["compare", *fast, "--resume", "--overwrite", "--out", str(resumed)])
    # the one-run layout of --seeds 1 is not mixed with the per-seed folders already there
    assert main(["compare", *fast, "--presets", "rnn", "--resume", "--out", str(resumed)]) == 2
    assert f"{resumed / 'rnn'} holds one run per seed (--seeds N), not what --seeds 1 writes" in capsys.readouterr().err
    # a worker's failure is the command's one-line error
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "rnn").write_text("not a run directory")
    assert main(["compare", *fast, "--presets", "rnn", "--jobs", "2", "--out", str(tmp_path / "blocked")]) == 2
    assert f"error: {tmp_path / 'blocked' / 'rnn'}: exists and is not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- named tasks
@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("conala", {"format": "conala", "tgt_tokenizer": "python", "slots": True}),
        ("django", {"format": "django", "tgt_tokenizer": "python", "slots": True}),
        ("multi30k", {"format": "parallel", "src_lang": "de", "tgt_lang": "en", "src_tokenizer": "moses", "lowercase_tgt": True}),
        ("sst2", {"format": "tsv", "tgt_field": "label", "label_map": {"0": "negative", "1": "positive"}}),
    ],
)
def test_task_names_a_real_tasks_reader_and_folder(task, expected, tmp_path, monkeypatch):
    from seq2seq.cli import _config_from_args, build_parser

    (tmp_path / task).mkdir()
    monkeypatch.setenv("SEQ2SEQ_DATA", str(tmp_path))
    config = _config_from_args(build_parser().parse_args(["compare", "--task", task, "--set", "train.epochs=2"]))
    assert config.data.path == str(tmp_path / task) and config.train.epochs == 2
    assert {key: getattr(config.data, key) for key in expected} == expected
    # --data moves the folder; the task, not the folder's files, decides the format.
    other = tmp_path / "elsewhere"
    other.mkdir()
    config = _config_from_args(build_parser().parse_args(["train", "--task", task, "--data", str(other)]))
    assert config.data.path == str(other) and config.data.format == expected["format"]


def test_task_config_file_settings_win_over_the_task(tmp_path, monkeypatch):
    from seq2seq.cli import _config_from_args, build_parser

    (tmp_path / "multi30k").mkdir()
    monkeypatch.setenv("SEQ2SEQ_DATA", str(tmp_path))
    config_file = tmp_path / "en-de.yaml"
    config_file.write_text("data:\n  src_lang: en\n  tgt_lang: de\n")
    config = _config_from_args(build_parser().parse_args(["train", str(config_file), "--task", "multi30k"]))
    assert (config.data.src_lang, config.data.tgt_lang, config.data.src_tokenizer) == ("en", "de", "moses")


def test_task_without_its_data_folder_is_a_clear_error(tmp_path):
    result = run_cli("compare", "--task", "django", "--quick", "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    _assert_clean_error(result, "--task django", "data folder", "--data PATH", "SEQ2SEQ_DATA")
    assert not (tmp_path / "cmp").exists()
    _assert_clean_error(run_cli("compare", "--task", "builtin", "--data", str(tmp_path)), "--task builtin generates its data")


def test_compare_on_real_tasks_reports_each_tasks_own_metric(tmp_path, capsys):
    """compare --task on slices of SST-2 and Multi30k: labels get accuracy and no code columns;
    translation gets sacreBLEU and quality by length in BLEU."""
    sst2, multi30k = real_data("sst2"), real_data("multi30k")
    slices = {"sst2": tmp_path / "sst2", "multi30k": tmp_path / "multi30k"}
    slices["sst2"].mkdir()
    for split in ("train", "dev"):
        lines = (sst2 / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        (slices["sst2"] / f"{split}.tsv").write_text("\n".join(lines[: 301 if split == "train" else 61]) + "\n", encoding="utf-8")
    slices["multi30k"].mkdir()
    for split, count in (("train", 300), ("valid", 40), ("test2016", 40)):
        for lang in ("de", "en"):
            lines = (multi30k / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()[:count]
            (slices["multi30k"] / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    budget = ["--set", "train.epochs=1", "--set", "model.encoder.hidden_size=32", "--set", "model.decoder.hidden_size=32"]
    for task, column, absent in (("sst2", "| accuracy |", ("| parses |", "| BLEU |")), ("multi30k", "| sacreBLEU |", ("| parses |",))):
        out = tmp_path / f"cmp-{task}"
        assert main(["compare", "--task", task, "--data", str(slices[task]), "--presets", "rnn,lstm-attention",
                     "--no-progress", *budget, "--out", str(out)]) == 0
        table = capsys.readouterr().out
        header = table.splitlines()[[i for i, line in enumerate(table.splitlines()) if line.startswith("| model |")][0]]
        assert column in header and not any(name in header for name in absent), header
        assert ("BLEU len" if task == "multi30k" else "accuracy len") in header
        assert ("output/reference length" in table) == (task == "multi30k")  # no output-length table for labels
        rows = json.loads((out / "results.json").read_text())
        assert {r["test"]["task"]["metric"] for r in rows} == {"accuracy" if task == "sst2" else "sacrebleu"}
        assert (out / "attention_lstm-attention.png").stat().st_size > 1000


def test_task_with_a_config_file_uses_the_files_data_path(tmp_path, monkeypatch):
    from seq2seq.cli import _config_from_args, build_parser

    monkeypatch.setenv("SEQ2SEQ_DATA", str(tmp_path / "nowhere"))  # the default folder is missing
    (tmp_path / "mine").mkdir()
    config_file = tmp_path / "sst2.yaml"
    config_file.write_text(f"data:\n  path: {tmp_path / 'mine'}\n")
    config = _config_from_args(build_parser().parse_args(["train", str(config_file), "--task", "sst2"]))
    assert config.data.path == str(tmp_path / "mine") and config.data.format == "tsv"


def test_compare_takes_the_transformer_and_draws_every_models_attention(tmp_path):
    """Every model with attention gets its heatmap, whatever its preset is called; the Transformer and a
    multi-head model show each head beside the mean."""
    out = tmp_path / "cmp"
    assert main(["compare", *FAST, "--presets", "lstm-luong-dot,transformer", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["preset"] for r in rows] == ["lstm-luong-dot", "transformer"]
    for preset in ("lstm-luong-dot", "transformer"):
        assert (out / f"attention_{preset}.png").stat().st_size > 1000
