"""Subword units (SentencePiece over a word-level tokenizer): round trips, config rules,
the run directory that keeps the models, resume and loading, and a real-data slice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import real_data, tiny_config

from seq2seq.checkpoint import load_run
from seq2seq.config import build_config
from seq2seq.data.corpus import build_corpus
from seq2seq.data.subwords import SubwordTokenizer, train_subword_model
from seq2seq.data.tokenizers import build_tokenizer
from seq2seq.evaluation.metrics import exact_match, token_bleu
from seq2seq.pipeline import evaluate_run, train
from seq2seq.run_files import RunDirError

SENTENCES = [
    "ein mann fährt fahrrad auf der straße .",
    "zwei hunde spielen im park mit einem ball .",
    "eine frau liest ein buch im café .",
    "ein kind springt in den see .",
    "mehrere männer arbeiten auf einer baustelle .",
] * 20


def _tokenizer(kind: str, vocab_size: int = 200) -> SubwordTokenizer:
    base = build_tokenizer("moses", lowercase=True, lang="de")
    model = train_subword_model((" ".join(base.tokenize(s)) for s in SENTENCES), kind=kind, vocab_size=vocab_size)
    return SubwordTokenizer(base, model, kind=kind)


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_pieces_join_back_into_the_base_tokenizers_text(kind):
    tokenizer = _tokenizer(kind)
    for text in ["Ein Mann spielt im Park.", "Zwei Frauen lesen ein Buch, im Café!", "ein see"]:
        pieces = tokenizer.tokenize(text)
        assert pieces and all(" " not in piece for piece in pieces)
        assert tokenizer.detokenize(pieces) == tokenizer.base.detokenize(tokenizer.base.tokenize(text))


def test_an_unseen_word_is_split_into_known_pieces():
    tokenizer = _tokenizer("bpe", vocab_size=80)  # too few units for every word: words must be split
    pieces = tokenizer.tokenize("frauenkind")  # never seen as a word, made of seen letters
    assert len(pieces) > 1 and set(pieces) <= tokenizer.units


def test_training_is_deterministic():
    assert _tokenizer("unigram").model == _tokenizer("unigram").model


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.tgt_tokenizer=python", "data.tgt_subwords=bpe"], "tgt_subwords needs a word-level tgt_tokenizer"),
        (["data.slots=true", "data.src_subwords=bpe"], "slots: true cannot be combined"),
        (["data.src_subwords=wordpiece"], "src_subwords"),
    ],
)
def test_config_refuses_subwords_where_they_cannot_work(overrides, message):
    from seq2seq.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        build_config(overrides=overrides)


def _write_parallel(folder: Path, n_train: int = 160) -> Path:
    """A toy de -> en folder in the Multi30k layout: numbers spelled out, reversed word order."""
    words_de = "null eins zwei drei vier fünf sechs sieben acht neun".split()
    words_en = "zero one two three four five six seven eight nine".split()
    generator = torch.Generator().manual_seed(0)
    splits = {"train": n_train, "valid": 20, "test2016": 20}
    for split, count in splits.items():
        src_lines, tgt_lines = [], []
        for _ in range(count):
            digits = torch.randint(0, 10, (int(torch.randint(2, 6, (1,))),), generator=generator).tolist()
            src_lines.append(" ".join(words_de[d] for d in digits))
            tgt_lines.append(" ".join(words_en[d] for d in reversed(digits)))
        (folder / f"{split}.de").write_text("\n".join(src_lines) + "\n", encoding="utf-8")
        (folder / f"{split}.en").write_text("\n".join(tgt_lines) + "\n", encoding="utf-8")
    return folder


def _subword_config(data_dir: Path, *extra: str):
    return tiny_config(
        "gru-attention", "data.format=parallel", f"data.path={data_dir}", "data.src_tokenizer=moses",
        "data.tgt_tokenizer=moses", "data.src_subwords=bpe", "data.tgt_subwords=unigram", "data.subword_vocab_size=60",
        "train.epochs=1", "train.batch_size=16", "train.device=cpu", "train.threads=1", *extra,
    )


@pytest.fixture
def subword_run(tmp_path):
    threads = torch.get_num_threads()
    (tmp_path / "data").mkdir()
    data_dir = _write_parallel(tmp_path / "data")
    config = _subword_config(data_dir)
    try:
        outcome = train(config, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    return outcome


def test_a_run_keeps_its_subword_models_and_loads_them(subword_run):
    run_dir = subword_run.run_dir
    assert (run_dir / "src_subwords.model").read_bytes() == subword_run.corpus.subword_models["src"]
    assert (run_dir / "tgt_subwords.model").read_bytes() == subword_run.corpus.subword_models["tgt"]
    loaded = load_run(run_dir)
    assert isinstance(loaded.src_tokenizer, SubwordTokenizer) and loaded.src_tokenizer.kind == "bpe"
    assert isinstance(loaded.tgt_tokenizer, SubwordTokenizer) and loaded.tgt_tokenizer.kind == "unigram"
    # The vocabulary holds pieces, and the loaded tokenizer splits text exactly as in training.
    src, _ = subword_run.corpus.tokens["test"][0]
    assert loaded.src_tokenizer.tokenize(subword_run.corpus.examples["test"][0].src) == src
    # Evaluation rebuilds the corpus from the run's own models and scores detokenized words.
    report = evaluate_run(run_dir, split="test", device="cpu")
    assert report.task["metric"] == "sacrebleu"
    assert not any("▁" in text for text in report.predictions)


def test_resume_reuses_the_saved_models(subword_run, tmp_path):
    config = subword_run.config
    rebuilt = build_corpus(config.data, config.vocab, vocabs=(subword_run.corpus.src_vocab, subword_run.corpus.tgt_vocab),
                           subword_models=load_run(subword_run.run_dir).subword_models)
    assert [p.src for p in rebuilt.encoded["train"]] == [p.src for p in subword_run.corpus.encoded["train"]]


def test_a_missing_or_corrupt_subword_model_is_a_clear_error(subword_run):
    run_dir = subword_run.run_dir
    (run_dir / "tgt_subwords.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(RunDirError, match="subword model"):
        load_run(run_dir)
    (run_dir / "tgt_subwords.model").unlink()
    with pytest.raises(RunDirError, match="tgt_subwords.model"):
        load_run(run_dir)


def test_multi30k_slice_has_almost_no_unknown_pieces():
    folder = real_data("multi30k")
    config = build_config(overrides=[
        "data.format=parallel", f"data.path={folder}", "data.src_tokenizer=moses", "data.tgt_tokenizer=moses",
        "data.lowercase_tgt=true", "data.src_subwords=bpe", "data.tgt_subwords=bpe", "data.subword_vocab_size=2000",
    ])
    corpus = build_corpus(config.data, config.vocab)
    assert len(corpus.src_vocab) <= 2000 + 4 and len(corpus.tgt_vocab) <= 2000 + 4
    valid = [token for src, _ in corpus.tokens["valid"] for token in src]
    unknown = sum(token not in corpus.src_vocab.stoi for token in valid)
    assert unknown / len(valid) < 0.005


def test_vocabularies_without_their_subword_models_are_refused(subword_run):
    config = subword_run.config
    with pytest.raises(ValueError, match="need its subword models"):
        build_corpus(config.data, config.vocab, vocabs=(subword_run.corpus.src_vocab, subword_run.corpus.tgt_vocab))


def test_token_bleu_and_exact_match_count_words_not_pieces(tmp_path):
    """With subwords the token-level figures score the words the pieces spell (the metric of
    word-level anchors such as multi-bleu over Moses tokens), not the pieces themselves."""
    threads = torch.get_num_threads()
    (tmp_path / "data").mkdir()
    config = _subword_config(_write_parallel(tmp_path / "data"), "data.subword_vocab_size=50", "data.tgt_subwords=bpe")
    try:
        outcome = train(config, tmp_path / "run")
        report = evaluate_run(outcome.run_dir, split="test", device="cpu")
    finally:
        torch.set_num_threads(threads)
    base = load_run(outcome.run_dir).tgt_tokenizer.base
    pieces = outcome.corpus.reference_tokens("test")
    references = [base.tokenize(example.tgt) for example in outcome.corpus.examples["test"]]
    assert sum(map(len, pieces)) > sum(map(len, references))  # words are split: pieces and words differ
    predicted = [base.tokenize(text) for text in report.predictions]
    assert report.bleu == pytest.approx(token_bleu(predicted, references), abs=1e-6)
    assert report.exact_match == pytest.approx(exact_match(predicted, references))
