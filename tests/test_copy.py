"""The copy mechanism (pointer-generator, See et al. 2017, section 2.2): the extended encoding, the
mixture as a distribution, the decoder's properties with copying, a tiny task whose identifiers are
outside the vocabulary (copied with copy, lost without), beam 1 == greedy, and a run directory
through the command line."""

from __future__ import annotations

import random
import string

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_config

from seq2seq.checkpoint import init_run_dir, load_run
from seq2seq.config import ConfigError, build_config
from seq2seq.data.batching import collate, encode_pairs
from seq2seq.data.tokenizers import build_tokenizer
from seq2seq.data.vocab import SPECIALS, UNK, Vocab
from seq2seq.decoding.beam import beam_search
from seq2seq.decoding.greedy import greedy_decode, greedy_decode_all
from seq2seq.decoding.sampling import sample_decode
from seq2seq.decoding.scoring import score_references
from seq2seq.evaluation.evaluate import evaluate
from seq2seq.models.build import build_model
from seq2seq.models.copy import copy_mixture
from seq2seq.run_files import read_safetensors, save_weights
from seq2seq.training.trainer import Trainer

PAD, UNK_ID, SOS, EOS = 0, 1, 2, 3
SRC_VOCAB, TGT_VOCAB = 13, 17


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: threads only add contention on a shared machine. Module scope: set up before
    the module's trained models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- config and encoding
def test_config_copy_needs_attention_and_old_configs_load() -> None:
    assert build_config(preset="lstm-attention-copy").model.decoder.copy
    assert not build_config(base={"model": {"preset": "lstm-attention", "decoder": {"cell": "lstm"}}}).model.decoder.copy
    with pytest.raises(ConfigError, match="copy: true needs attention"):
        build_config(preset="lstm", overrides=["model.decoder.copy=true"])


def test_copy_ids_and_extended_targets_on_a_hand_example() -> None:
    vocab = Vocab([*SPECIALS, "=", "3", "total"])  # V = 7: "=" 4, "3" 5, "total" 6
    src = "set foo to 3 and foo total".split()
    src_copy, oovs = vocab.encode_copy_source(src)
    assert oovs == ("set", "foo", "to", "and")  # first occurrence order
    assert src_copy == [7, 8, 9, 5, 10, 8, 6]  # known words keep their id, the j-th unknown one is 7 + j
    target = "foo = 3 + bar".split()  # foo is copied; "+" and "bar" are neither known nor in the source
    assert vocab.encode(target, add_sos=True, add_eos=True, oovs=oovs) == [SOS, 8, 4, 5, UNK_ID, UNK_ID, EOS]
    assert vocab.decode([8, 4, 5, UNK_ID, EOS, 6], oovs=oovs) == ["foo", "=", "3", UNK]
    assert vocab.decode([11]) == [UNK]  # an extended id without its source word

    pairs = encode_pairs([(src, target), (["total"], ["total"])], src_vocab=Vocab.build([src]), tgt_vocab=vocab)
    assert pairs[0].tgt == [SOS, UNK_ID, 4, 5, UNK_ID, UNK_ID, EOS]  # without copy nothing changes
    plain, copying = collate(pairs, [0, 1], pad_index=PAD), collate(pairs, [0, 1], pad_index=PAD, copy=True)
    assert plain.src_copy is None and torch.equal(plain.src, copying.src)
    assert copying.src_copy.tolist() == [[7, 8, 9, 5, 10, 8, 6], [6, 0, 0, 0, 0, 0, 0]]
    assert copying.tgt.tolist() == [[SOS, 8, 4, 5, UNK_ID, UNK_ID, EOS], [SOS, 6, EOS, 0, 0, 0, 0]]


# --------------------------------------------------------------------------- the mixture
def _model(seed: int = 0, *extra: str):
    torch.manual_seed(seed)
    config = tiny_config("lstm-attention-copy", "model.encoder.bidirectional=true", *extra)
    return build_model(config.model, src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB)


def _batch(lengths: list[int], *, tgt_len: int = 5, seed: int = 1):
    """src, lengths, mask, tgt_input (with extended ids) and src_copy with repeated words."""
    generator = torch.Generator().manual_seed(seed)
    src_lengths = torch.tensor(lengths)
    mask = torch.arange(max(lengths))[None, :] < src_lengths[:, None]  # [B, S]
    src = torch.randint(4, SRC_VOCAB, mask.shape, generator=generator).masked_fill(~mask, PAD)
    src_copy = torch.randint(4, TGT_VOCAB + 3, mask.shape, generator=generator)  # ids >= 17: unknown words
    src_copy[:, 1] = src_copy[:, 0]  # the same word twice in every source
    src_copy = src_copy.masked_fill(~mask, PAD)
    tgt_input = torch.randint(4, TGT_VOCAB + 3, (len(lengths), tgt_len), generator=generator)
    tgt_input[:, 0] = SOS
    return src, src_lengths, mask, tgt_input, src_copy


def test_mixture_is_a_distribution_over_the_extended_vocabulary() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    attention = torch.rand(2, 3, 5, generator=generator).masked_fill(~mask[:, None], 0.0)
    attention = attention / attention.sum(-1, keepdim=True)  # [B, T, S]
    copy_ids = torch.tensor([[4, 9, 4, 4, 10], [9, 11, 9, 0, 0]])  # word 4 three times, 9 twice
    log_probs = copy_mixture(torch.randn(2, 3, 9, generator=generator), torch.randn(2, 3, 1, generator=generator),
                             attention, copy_ids, extended_size=12)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 3))
    model = _model().eval()
    src, lengths, mask, tgt_input, src_copy = _batch([5, 2, 4])
    with torch.no_grad():
        log_probs, attention = model(src, lengths, mask, tgt_input, src_copy=src_copy)
    assert log_probs.shape == (3, 5, int(src_copy.max()) + 1)  # V + the most unknown words of any source
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 5))
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 5))


def test_p_gen_zero_gives_the_attention_scattered_onto_copy_ids() -> None:
    model = _model().eval()
    src, lengths, mask, tgt_input, src_copy = _batch([5, 2, 4])
    with torch.no_grad():
        model.decoder.p_gen.weight.zero_()
        model.decoder.p_gen.bias.fill_(-1e4)  # p_gen = sigmoid(-1e4) = 0: copy only
        memory, state = model.encode(src, lengths, mask, src_copy=src_copy)
        log_probs, _, weights = model.decoder.step(tgt_input[:, 0], state, memory)  # [B, V_ext], [B, S]
        expected = torch.zeros_like(log_probs).scatter_add_(1, src_copy, weights)
        torch.testing.assert_close(log_probs.exp(), expected, atol=1e-6, rtol=0)
        model.decoder.p_gen.bias.fill_(1e4)  # p_gen = 1: the vocabulary softmax, nothing on unknown words
        probs = model.decoder.step(tgt_input[:, 0], state, memory)[0].exp()
    torch.testing.assert_close(probs[:, :TGT_VOCAB].sum(-1), torch.ones(3))
    assert probs[:, TGT_VOCAB:].max() < 1e-6


# --------------------------------------------------------------------------- the decoder with copying
@pytest.mark.parametrize(
    "extra",
    [(), ("model.decoder.readout_size=20", "model.decoder.input_feeding=true"), ("model.decoder.coverage=true",)],
    ids=["bahdanau", "input-feeding", "coverage"],
)
def test_copy_decoder_steps_like_its_unroll_and_reads_copied_words_as_unk(extra) -> None:
    model = _model(0, *extra).eval()
    src, lengths, mask, tgt_input, src_copy = _batch([5, 2, 4], tgt_len=6)
    with torch.no_grad():
        memory, state = model.encode(src, lengths, mask, src_copy=src_copy)
        forced, _ = model(src, lengths, mask, tgt_input, src_copy=src_copy)
        free, _ = model(src, lengths, mask, tgt_input, src_copy=src_copy, teacher_forcing=0.0)
        for gold in (True, False):  # step by step: the gold prefix, or the previous argmax (maybe a copied id)
            prev, steps, step_state = tgt_input[:, 0], [], state
            for t in range(tgt_input.size(1)):
                log_probs, step_state, _ = model.decoder.step(prev, step_state, memory)
                steps.append(log_probs)
                prev = tgt_input[:, t + 1] if gold and t + 1 < tgt_input.size(1) else log_probs.argmax(-1)
            torch.testing.assert_close(torch.stack(steps, dim=1), forced if gold else free, atol=1e-5, rtol=0)
        copied = torch.full((3,), TGT_VOCAB + 2)
        unk = torch.full((3,), UNK_ID)
        torch.testing.assert_close(model.decoder.step(copied, state, memory)[0], model.decoder.step(unk, state, memory)[0])
        # beam search reorders the memory: copy ids move with their rows, the width stays
        index = torch.tensor([2, 0, 2])
        selected = memory.select(index)
        assert torch.equal(selected.copy_ids, src_copy[index]) and selected.extended_size == memory.extended_size
    with pytest.raises(ValueError, match=r"needs src_copy \[B, S\]"):
        model.encode(src, lengths, mask)
    plain = build_model(tiny_config().model, src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB)
    with pytest.raises(ValueError, match="no copy mechanism"):
        plain.encode(src, lengths, mask, src_copy=src_copy)


@pytest.mark.parametrize("extra", [(), ("model.decoder.coverage=true",)], ids=["copy", "copy-coverage"])
def test_gradients_reach_every_parameter_of_a_copy_model(extra) -> None:
    model = _model(0, *extra).train()
    src, lengths, mask, tgt_input, src_copy = _batch([5, 2, 4])
    log_probs, _ = model(src, lengths, mask, tgt_input, src_copy=src_copy, teacher_forcing=1.0)
    targets = src_copy[:, :1].expand(3, 5)  # each source's first word (an unknown one for most rows): copy it
    F.cross_entropy(log_probs.transpose(1, 2), targets).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


# --------------------------------------------------------------------------- a task to copy
def _assignments(rng: random.Random, n: int) -> list[tuple[list[str], list[str]]]:
    """'set NAME to 3' / 'assign 3 to NAME' -> 'NAME = 3', NAME a fresh random identifier."""
    pairs = []
    for _ in range(n):
        name = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 7))) + rng.choice(["", "_id", "_count"])
        digit = str(rng.randint(0, 9))
        src = ["set", name, "to", digit] if rng.random() < 0.5 else ["assign", digit, "to", name]
        pairs.append((src, [name, "=", digit]))
    return pairs


# a small Transformer, trained as the paper does (warm-up, then the inverse square root)
TRANSFORMER = ("model.transformer.d_model=32", "model.transformer.heads=2", "model.transformer.ffn_size=64",
               "model.transformer.encoder_layers=2", "model.transformer.decoder_layers=2",
               "model.transformer.dropout=0.0", "train.lr_schedule=inverse_sqrt", "train.warmup_steps=60",
               "train.learning_rate=0.003", "train.adam_betas=[0.9,0.98]")


@pytest.fixture(scope="module")
def assignment_task():
    """Models trained for 300 steps with and without copy, on identifiers seen once (not in the vocabulary)."""
    rng = random.Random(7)
    train, test = _assignments(rng, 400), _assignments(rng, 40)
    src_vocab = Vocab.build((s for s, _ in train), min_freq=2)
    tgt_vocab = Vocab.build((t for _, t in train), min_freq=2)
    test = [(s, t) for s, t in test if t[0] not in tgt_vocab]  # every test identifier is unknown
    encoded_train = encode_pairs(train, src_vocab=src_vocab, tgt_vocab=tgt_vocab)
    encoded_test = encode_pairs(test, src_vocab=src_vocab, tgt_vocab=tgt_vocab)
    models = {}
    for preset in ("lstm-attention-copy", "lstm-attention", "transformer-copy"):
        extra = TRANSFORMER if preset.startswith("transformer") else ()
        config = tiny_config(preset, "train.epochs=12", "train.batch_size=16", "train.learning_rate=0.01",
                             "train.teacher_forcing=1.0", "train.early_stopping_patience=100", *extra)
        torch.manual_seed(0)
        model = build_model(config.model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
        Trainer(model=model, config=config.train, pad_index=PAD, device=torch.device("cpu")).fit(
            encoded_train, encoded_test)
        models[preset] = model.eval()
    return models, tgt_vocab, test, encoded_test


def test_a_copy_transformer_writes_unknown_identifiers_from_its_input(assignment_task) -> None:
    models, tgt_vocab, test, encoded = assignment_task
    references = [t for _, t in test]
    for beam_size in (1, 3):
        report, _ = evaluate(models["transformer-copy"], encoded, references, tgt_vocab=tgt_vocab,
                             tgt_tokenizer=build_tokenizer("space"), max_len=6, is_code=False, beam_size=beam_size)
        copied = [p for p, (_, t) in zip(report.predictions, test) if t[0] in p.split()]
        assert len(copied) >= 0.9 * len(test), report.predictions
        assert report.exact_match >= 0.8, report.predictions


def test_a_copy_model_writes_unknown_identifiers_from_its_input(assignment_task) -> None:
    models, tgt_vocab, test, encoded = assignment_task
    assert len(test) >= 30
    references = [t for _, t in test]
    report, _ = evaluate(models["lstm-attention-copy"], encoded, references, tgt_vocab=tgt_vocab,
                         tgt_tokenizer=build_tokenizer("space"), max_len=6, is_code=False)
    copied = [p for p, (_, t) in zip(report.predictions, test) if t[0] in p.split()]
    assert len(copied) >= 0.9 * len(test), report.predictions  # the identifier, never in the vocabulary, is copied
    assert report.exact_match >= 0.8, report.predictions
    beam, _ = evaluate(models["lstm-attention-copy"], encoded, references, tgt_vocab=tgt_vocab,
                       tgt_tokenizer=build_tokenizer("space"), max_len=6, beam_size=3, constrain="python")
    assert beam.exact_match >= 0.8 and beam.parse_rate >= 0.8, beam.predictions  # "kzqu_count = 6" is Python
    # the grammar reads the copied words of each input: every output parses, the copies stay
    grammar, _ = evaluate(models["lstm-attention-copy"], encoded, references, tgt_vocab=tgt_vocab,
                          tgt_tokenizer=build_tokenizer("space"), max_len=6, beam_size=3, constrain="grammar")
    assert grammar.parse_rate == 1.0 and grammar.exact_match >= beam.exact_match, grammar.predictions
    # Without copy the same model cannot write them: <unk> (or another word) takes their place.
    plain = models["lstm-attention"]
    hypotheses = greedy_decode_all(plain, [p.src for p in encoded], sos_index=SOS, eos_index=EOS, pad_index=PAD,
                                   max_len=6)
    outputs = [tgt_vocab.decode(h.tokens) for h in hypotheses]
    assert not any(t[0] in output for output, (_, t) in zip(outputs, test))
    assert sum(UNK in output for output in outputs) >= 0.9 * len(test)


def test_evaluate_reports_output_length_and_outputs_cut_at_max_len(assignment_task) -> None:
    models, tgt_vocab, test, encoded = assignment_task
    references = [t for _, t in test]
    reference_tokens = sum(map(len, references))
    report, hypotheses = evaluate(models["lstm-attention-copy"], encoded, references, tgt_vocab=tgt_vocab,
                                  tgt_tokenizer=build_tokenizer("space"), max_len=6, is_code=False)
    assert report.stopped_at_max_len == sum(not h.finished for h in hypotheses) < len(test) / 10
    assert report.length_ratio == pytest.approx(sum(len(p.split()) for p in report.predictions) / reference_tokens)
    # one token allowed: every output is cut there, one token long
    cut, _ = evaluate(models["lstm-attention-copy"], encoded, references, tgt_vocab=tgt_vocab,
                      tgt_tokenizer=build_tokenizer("space"), max_len=1, is_code=False)
    assert cut.stopped_at_max_len == len(test) and cut.length_ratio == pytest.approx(len(test) / reference_tokens)


def test_beam_1_equals_greedy_and_scores_agree_with_copy(assignment_task) -> None:
    models, tgt_vocab, test, encoded = assignment_task
    model = models["lstm-attention-copy"]
    batch = collate(encoded[:16], list(range(16)), pad_index=PAD, copy=True)
    args = (model, batch.src, batch.src_lengths, batch.src_mask)
    greedy = greedy_decode(*args, sos_index=SOS, eos_index=EOS, max_len=6, src_copy=batch.src_copy)
    beam = beam_search(*args, sos_index=SOS, eos_index=EOS, pad_index=PAD, beam_size=1, max_len=6,
                       src_copy=batch.src_copy)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam]
    assert [h.score for h in greedy] == pytest.approx([b[0].score for b in beam], abs=1e-5)
    assert any(token >= len(tgt_vocab) for h in greedy for token in h.tokens)  # copied words are in there
    sampled = sample_decode(*args, sos_index=SOS, eos_index=EOS, max_len=6, top_k=1, seed=0, src_copy=batch.src_copy)
    assert [h.tokens for h in sampled] == [h.tokens for h in greedy]
    outputs = [[SOS, *h.tokens, EOS] for h in greedy]
    tgt = torch.tensor([ids + [PAD] * (8 - len(ids)) for ids in outputs])
    scores = score_references(*args, tgt, src_copy=batch.src_copy)
    assert scores.tolist() == pytest.approx([h.score for h in greedy], abs=1e-4)
    wider = beam_search(*args, sos_index=SOS, eos_index=EOS, pad_index=PAD, beam_size=3, nbest=3, max_len=6,
                        src_copy=batch.src_copy)
    assert all(len(alternatives) == 3 for alternatives in wider)


# --------------------------------------------------------------------------- run directory
@pytest.mark.parametrize("coverage", [False, True], ids=["copy", "copy-coverage"])
def test_copy_run_trains_saves_loads_and_generates_through_the_cli(coverage, tmp_path, capsys) -> None:
    from seq2seq import load
    from seq2seq.cli import main

    run_dir = tmp_path / "copy"
    sets = ["--set", "model.decoder.coverage=true", "--set", "train.coverage_weight=0.5"] if coverage else []
    assert main(["train", "--quick", "--no-progress", "--no-eval", "--preset", "lstm-attention-copy", *sets,
                 "--set", "train.epochs=1", "--set", "train.threads=1", "--out", str(run_dir)]) == 0
    assert "copy: true" in (run_dir / "config.yaml").read_text()
    assert ("coverage: true" in (run_dir / "config.yaml").read_text()) == coverage
    tensors, _ = read_safetensors(run_dir / "best.safetensors")
    assert {"decoder.p_gen.weight", "decoder.p_gen.bias"} <= set(tensors)
    capsys.readouterr()
    text = "create a list named zzq_unseen containing 3 , 17 and 42"
    assert main(["generate", str(run_dir), text, "--scores"]) == 0
    assert main(["generate", str(run_dir), text, "--beam", "3", "--nbest", "2"]) == 0
    assert main(["generate", str(run_dir), text, "--sample", "--seed", "1", "--max-len", "8"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4  # one line, two n-best lines, one sample
    model = load(run_dir, device="cpu")
    [result] = model.generate([text], beam=2, max_len=8)
    generation = result.generations[0]
    assert generation.attention.shape[1] == len(result.source_tokens)
    # The next-token distributions cover the source's unknown words too (columns V + j).
    _, oovs = model.translator.run.tgt_vocab.encode_copy_source(result.source_tokens)
    probabilities = model.translator.step_probabilities(generation)
    assert "zzq_unseen" in oovs
    assert probabilities.shape == (len(generation.tokens) + generation.finished, model.info.tgt_vocab_size + len(oovs))
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(len(probabilities)))


def test_a_run_directory_without_the_copy_key_still_loads(tmp_path) -> None:
    config = tiny_config()
    src_vocab, tgt_vocab = Vocab.build([["a", "b"]]), Vocab.build([["x", "y"]])
    model = build_model(config.model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
    init_run_dir(tmp_path, config=config, src_vocab=src_vocab, tgt_vocab=tgt_vocab, parameters=0, overwrite=False)
    saved = (tmp_path / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(saved.replace("    copy: false\n", ""))  # as written before copy existed
    assert "copy" not in (tmp_path / "config.yaml").read_text()
    save_weights(model, tmp_path / "best.safetensors")
    run = load_run(tmp_path)
    assert not run.model.copies and not run.config.model.decoder.copy
