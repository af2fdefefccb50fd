"""ONNX export of the Transformer (seq2seq.models.onnx_transformer): onnxruntime's logits and
cross-attention equal PyTorch's at every step (the growing self-attention cache and the
once-projected cross-attention keys/values passed in and out), and a trained run decodes the
same tokens through ``--runtime onnx`` as through torch (greedy, beam, evaluate, the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')")

from helpers import train_keeping_threads  # noqa: E402
from test_transformer import TINY, VARIANTS, make_batch, make_model  # noqa: E402

from seq2seq.cli import main  # noqa: E402
from seq2seq.config import build_config  # noqa: E402
from seq2seq.decoding.search import decode_sources  # noqa: E402
from seq2seq.export import export_run  # noqa: E402
from seq2seq.models.onnx_transformer import MANIFEST, OnnxTransformer, export_transformer_onnx  # noqa: E402
from seq2seq.translator import Translator  # noqa: E402

# trains in about 5 s on one thread to outputs that differ per input (not yet correct ones)
TRAINED = [*TINY, "model.transformer.d_model=32", "model.transformer.ffn_size=64", "model.transformer.dropout=0.0",
           "data.builtin_train_size=600", "train.epochs=8", "train.batch_size=32", "train.device=cpu", "train.threads=1",
           "train.learning_rate=0.003", "train.lr_schedule=inverse_sqrt", "train.warmup_steps=30"]
SOURCES = ["add 3 to total", "print hello", "sort the list `items` in reverse order and print the first one", "x"]


def _export(model, folder: Path) -> OnnxTransformer:
    def write(path: Path, fill) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fill(path)

    (folder / MANIFEST).write_text(json.dumps(export_transformer_onnx(model, folder, write=write)))
    return OnnxTransformer(folder, model)


@pytest.mark.parametrize("variant", [*VARIANTS, "learned-post"])
def test_every_step_matches_torch(variant, tmp_path):
    torch.set_num_threads(1)
    extra = VARIANTS.get(variant, ("model.transformer.positions=learned", "model.transformer.max_positions=12",
                                   "data.max_src_len=12", "data.max_tgt_len=11"))
    model = make_model(*extra)
    onnx_model = _export(model, tmp_path)
    assert not model.training  # the export leaves the model as it found it: in eval mode, dropout off
    src, lengths, mask, tgt = make_batch([6, 2, 4], tgt_len=7)  # padded rows: the graphs take whole batches
    with torch.no_grad():
        memory, state = model.encode(src, lengths, mask)
    onnx_memory, onnx_state = onnx_model.encode(src, lengths, mask)
    torch.testing.assert_close(onnx_memory.keys[-1], memory.keys[-1], atol=1e-5, rtol=0)
    assert onnx_state.keys[0].shape == (3, 2, 0, 8)  # an empty cache [B, h, 0, d_k]
    for t in range(tgt.size(1)):
        with torch.no_grad():
            logits, state, weights = model.decoder.step(tgt[:, t], state, memory)
        onnx_logits, onnx_state, onnx_weights = onnx_model.decoder.step(tgt[:, t], onnx_state, onnx_memory)
        torch.testing.assert_close(onnx_logits, logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(onnx_weights, weights, atol=1e-6, rtol=0)
        assert onnx_state.position == state.position == t + 1
        assert onnx_state.keys[-1].shape == state.keys[-1].shape == (3, 2, t + 1, 8)  # grew by one position
    # teacher-forced, step by step (what evaluation's validation loss reads)
    with torch.no_grad():
        expected, attention = model(src, lengths, mask, tgt)
    got, got_attention = onnx_model(src, lengths, mask, tgt)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_attention, attention, atol=1e-6, rtol=0)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_search_on_onnx_equals_search_on_torch(beam_size, tmp_path):
    torch.set_num_threads(1)
    model = make_model("model.transformer.norm=pre", seed=3)
    onnx_model = _export(model, tmp_path)
    generator = torch.Generator().manual_seed(5)
    sources = [torch.randint(4, 19, (n,), generator=generator).tolist() for n in (3, 7, 1, 5, 6)]
    options = {"sos_index": 2, "eos_index": 3, "pad_index": 0, "max_len": 9, "beam_size": beam_size,
               "nbest": beam_size, "batch_size": 3, "workers": 1}
    with torch.no_grad():
        expected = decode_sources(model, sources, **options)
    got = decode_sources(onnx_model, sources, **options)
    for mine, reference in zip(got, expected, strict=True):
        assert [h.tokens for h in mine] == [h.tokens for h in reference]
        assert [h.score for h in mine] == pytest.approx([h.score for h in reference], abs=1e-4)


def test_a_copy_transformer_decodes_words_outside_the_vocabulary_like_torch(tmp_path):
    """The copy Transformer's step graph gives log-probabilities over each batch's extended vocabulary:
    the n-best lists, copied unknown words included, and their scores equal torch's."""
    config = build_config(preset="transformer-copy", overrides=[*TRAINED, "decode.max_len=12", "train.epochs=20"])  # copies by then
    run_dir = train_keeping_threads(config, tmp_path / "copy")
    export_run(run_dir)
    texts = ["print zanzibar", "add quokka to total", "sort the list `wombats` in reverse order"]
    expected = Translator.from_run_dir(run_dir).generate_nbest(texts, beam_size=3, nbest=3)
    got = Translator.from_run_dir(run_dir, runtime="onnx").generate_nbest(texts, beam_size=3, nbest=3)
    assert [[g.text for g in n] for n in got] == [[e.text for e in n] for n in expected]
    assert any(word in g.text for n in got for g in n for word in ("zanzibar", "quokka", "wombats"))  # copied
    for mine, reference in zip(got, expected, strict=True):
        assert [g.score for g in mine] == pytest.approx([e.score for e in reference], abs=1e-3)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("onnx-transformer") / "run"
    config = build_config(preset="transformer", overrides=[
        *TRAINED, "decode.max_len=20"])
    return train_keeping_threads(config, run_dir)


def test_trained_run_exports_and_decodes_the_same_from_the_command_line(trained_run, capsys):
    assert main(["export", str(trained_run), "--format", "onnx"]) == 0
    manifest = json.loads((trained_run / "onnx" / "onnx.json").read_text())
    assert manifest["architecture"] == "transformer" and "past_keys_0" in manifest["decoder_step"]["inputs"]
    capsys.readouterr()
    for beam, text in (("1", SOURCES[0]), ("3", SOURCES[2])):
        assert main(["generate", str(trained_run), "--beam", beam, "--scores", text]) == 0
        torch_text = capsys.readouterr().out
        assert main(["generate", str(trained_run), "--runtime", "onnx", "--beam", beam, "--scores", text]) == 0
        onnx_text = capsys.readouterr().out
        # text <tab> score <tab> parses: the same text and badge; the score within rounding of its 4th
        # decimal (the runtimes' scores differ by ~1e-6, which can round either way)
        (torch_output, torch_score, *torch_badge), (onnx_output, onnx_score, *onnx_badge) = (
            out.rstrip("\n").split("\t") for out in (torch_text, onnx_text))
        assert (onnx_output, onnx_badge) == (torch_output, torch_badge)
        assert float(onnx_score) == pytest.approx(float(torch_score), abs=2e-4)
    # the heads are the torch model's to show: through ONNX the plot shows the mean (no layer to hook)
    plot = trained_run / "onnx-attention.png"
    assert main(["generate", str(trained_run), "--runtime", "onnx", "--plot-attention", str(plot), SOURCES[0]]) == 0
    assert plot.stat().st_size > 1000


def test_trained_run_evaluates_the_same_with_onnx(trained_run):
    from seq2seq.pipeline import evaluate_run

    export_run(trained_run)
    with_torch = evaluate_run(trained_run, split="valid", device="cpu")
    with_onnx = evaluate_run(trained_run, split="valid", runtime="onnx")
    assert with_onnx.predictions == with_torch.predictions
    assert with_onnx.loss == pytest.approx(with_torch.loss, abs=1e-4)  # teacher-forced, step by step
    nbest_torch = Translator.from_run_dir(trained_run).generate_nbest(SOURCES, beam_size=3, nbest=3)
    nbest_onnx = Translator.from_run_dir(trained_run, runtime="onnx").generate_nbest(SOURCES, beam_size=3, nbest=3)
    assert len({n[0].text for n in nbest_torch}) > 2  # the outputs differ per input: a real comparison
    for expected, got in zip(nbest_torch, nbest_onnx, strict=True):
        assert [g.tokens for g in got] == [e.tokens for e in expected]
        assert [g.score for g in got] == pytest.approx([e.score for e in expected], abs=1e-4)
