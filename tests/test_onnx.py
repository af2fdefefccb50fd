"""ONNX export: the onnxruntime model decodes exactly like the PyTorch model it was exported from
(greedy and beam search, every cell and attention layout), and stale or missing exports are refused."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import train_tiny_run

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')")

from seq2seq.checkpoint import load_run  # noqa: E402
from seq2seq.cli import main  # noqa: E402
from seq2seq.export import export_run  # noqa: E402
from seq2seq.translator import Translator  # noqa: E402
from seq2seq.run_files import RunDirError  # noqa: E402

SOURCES = [
    "sort the list `items` in reverse order",
    "print hello",
    "open the file 'data.txt' and read all lines into a list called lines, then strip each line",
    "x",
]

# train_tiny_run starts from the lstm-attention preset; these overrides give the other layouts.
LAYOUTS = {
    "lstm-attention": (),
    "bigru-input-feeding": ("model.encoder.cell=gru", "model.decoder.cell=gru", "model.encoder.bidirectional=true",
                            "model.decoder.readout_size=24", "model.decoder.input_feeding=true"),
    "rnn-2layer-no-attention": ("model.encoder.cell=rnn", "model.decoder.cell=rnn", "model.encoder.layers=2",
                                "model.decoder.layers=2", "model.decoder.attention=none"),
    # the coverage vector is a state input and output of the step graph
    "lstm-attention-coverage": ("model.decoder.coverage=true",),
    "gru-local-p": ("model.encoder.cell=gru", "model.decoder.cell=gru", "model.decoder.attention=local-p",
                    "model.decoder.readout_size=24", "model.decoder.input_feeding=true", "model.decoder.attention_window=3"),
    # ... and with a bilinear score, whose coverage term is added to the score (per head for multi-head)
    # (coverage loss weight 1.0, as when this layout was written: at 0.1, the default since 210de7c, its
    # tiny model's beam-3 outputs loop to max_len as near-tied hypotheses that float rounding orders
    # differently in ONNX Runtime and torch)
    "gru-local-p-coverage": ("model.encoder.cell=gru", "model.decoder.cell=gru", "model.decoder.attention=local-p",
                             "model.decoder.readout_size=24", "model.decoder.input_feeding=true",
                             "model.decoder.attention_window=3", "model.decoder.coverage=true", "train.coverage_weight=1.0"),
    "lstm-multihead": ("model.decoder.attention=multihead", "model.decoder.attention_heads=2"),
    "lstm-multihead-coverage": ("model.decoder.attention=multihead", "model.decoder.attention_heads=2",
                                "model.decoder.coverage=true"),
    # copy: the step's output width follows each batch's unknown source words (SOURCES have some)
    "lstm-attention-copy": ("model.decoder.copy=true",),
    "bigru-copy-coverage": ("model.encoder.cell=gru", "model.decoder.cell=gru", "model.encoder.bidirectional=true",
                            "model.decoder.readout_size=24", "model.decoder.input_feeding=true", "model.decoder.copy=true",
                            "model.decoder.coverage=true"),
}


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def exported(request, tmp_path_factory):
    run_dir = train_tiny_run(tmp_path_factory.mktemp("onnx") / request.param, *LAYOUTS[request.param])
    export_run(run_dir)
    return run_dir


@pytest.mark.parametrize("beam", [1, 3])
def test_onnx_runtime_decodes_like_torch(exported, beam):
    torch_out = Translator.from_run_dir(exported).generate_nbest(SOURCES, beam_size=beam, nbest=beam)
    onnx_out = Translator.from_run_dir(exported, runtime="onnx").generate_nbest(SOURCES, beam_size=beam, nbest=beam)
    for expected, got in zip(torch_out, onnx_out):
        assert [g.tokens for g in got] == [e.tokens for e in expected]
        for e, g in zip(expected, got):
            assert g.score == pytest.approx(e.score, abs=1e-3)
            if e.attention is not None:
                torch.testing.assert_close(g.attention, e.attention, atol=1e-4, rtol=0)


def test_evaluate_with_onnx_matches_torch(exported):
    from seq2seq.pipeline import evaluate_run

    with_torch = evaluate_run(exported, split="test", device="cpu")
    with_onnx = evaluate_run(exported, split="test", runtime="onnx")
    assert with_onnx.predictions == with_torch.predictions
    assert with_onnx.loss == pytest.approx(with_torch.loss, abs=1e-4)  # teacher-forced, step by step
    assert json.loads((exported / "eval_test_onnx.json").read_text())["runtime"] == "onnx"
    assert json.loads((exported / "eval_test_onnx.json").read_text())["workers"] == 1  # onnxruntime has its own threads


def test_a_stale_or_missing_export_is_refused(tmp_path):
    run_dir = train_tiny_run(tmp_path / "run")
    with pytest.raises(RunDirError, match="export the run first"):
        load_run(run_dir, runtime="onnx")
    export_run(run_dir)
    load_run(run_dir, runtime="onnx")
    with pytest.raises(RunDirError, match="other weights"):
        load_run(run_dir, which="last", runtime="onnx")  # the export holds best, not last
    (run_dir / "onnx" / "decoder_step.onnx").write_bytes(b"not a graph")
    with pytest.raises(RunDirError, match="cannot be loaded"):
        load_run(run_dir, runtime="onnx")


def test_cli_export_and_generate(tmp_path, capsys):
    run_dir = train_tiny_run(tmp_path / "run")
    assert main(["export", str(run_dir)]) == 0
    assert (run_dir / "onnx" / "onnx.json").is_file()
    capsys.readouterr()
    assert main(["generate", str(run_dir), "--runtime", "onnx", "print hello"]) == 0
    onnx_text = capsys.readouterr().out
    assert main(["generate", str(run_dir), "print hello"]) == 0
    assert capsys.readouterr().out == onnx_text
    assert main(["generate", str(run_dir), "--runtime", "onnx", "--quantize", "int8", "print hello"]) == 2
    assert "no quantize" in capsys.readouterr().err


def test_copy_models_decode_words_outside_the_vocabulary_like_torch(tmp_path):
    """A copy model's ONNX step gives log-probabilities over the extended vocabulary: outputs that
    copy a source word the vocabulary lacks come out the same as torch's."""
    run_dir = train_tiny_run(tmp_path / "run", "model.decoder.copy=true", "train.epochs=3")
    export_run(run_dir)
    texts = ["print zanzibar", "add quokka to total", "sort the list `wombats` in reverse order"]
    torch_out = Translator.from_run_dir(run_dir).generate_nbest(texts, beam_size=3, nbest=3)
    onnx_out = Translator.from_run_dir(run_dir, runtime="onnx").generate_nbest(texts, beam_size=3, nbest=3)
    assert [[g.text for g in n] for n in onnx_out] == [[e.text for e in n] for n in torch_out]
    assert any(word in g.text for n in onnx_out for g in n for word in ("zanzibar", "quokka"))  # copied, not generated
    for expected, got in zip(torch_out, onnx_out):
        assert [g.score for g in got] == pytest.approx([e.score for e in expected], abs=1e-3)
