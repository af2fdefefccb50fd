"""Subword units (SentencePiece) on top of a word-level tokenizer.

Translation models with word vocabularies map every rare word to ``<unk>``; subword units
(Sennrich et al. 2016, BPE; Kudo 2018, unigram language model) split rare words into known
pieces instead, so the output vocabulary stays small and nothing is out of vocabulary.

The pipeline is the usual one for WMT-style data ("Moses, then BPE"):

    text --base tokenizer--> words --join with spaces--> SentencePiece --> pieces
    pieces --SentencePiece decode--> words --base detokenizer--> text

SentencePiece is trained on the training split only (:func:`train_subword_model`), with the
identity normalisation, so decoding the pieces gives back exactly the base tokenizer's words.
The trained model is a protobuf (no pickle) that the run directory keeps as
``src_subwords.model`` / ``tgt_subwords.model``; a run reloads it instead of training again.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import sentencepiece as spm

from seq2seq.config import ConfigError
from seq2seq.data.tokenizers import Tokenizer

__all__ = ["SUBWORD_KINDS", "SubwordTokenizer", "subword_file_name", "train_subword_model"]

SUBWORD_KINDS = ("bpe", "unigram")


def subword_file_name(side: str) -> str:
    """Where a run directory keeps the subword model of ``side`` ("src" or "tgt")."""
    return f"{side}_subwords.model"


def train_subword_model(sentences: Iterable[str], *, kind: str, vocab_size: int) -> bytes:
    """Train a SentencePiece ``kind`` model ("bpe" or "unigram") on pre-tokenized ``sentences``
    (words joined by spaces) and return the serialised model.

    ``vocab_size`` is an upper bound: a small corpus that cannot fill it gets fewer pieces
    (``hard_vocab_limit`` off) instead of an error. One thread keeps training deterministic.
    """
    if kind not in SUBWORD_KINDS:
        raise ConfigError(f"unknown subword model {kind!r}; valid: {', '.join(SUBWORD_KINDS)}")
    sentences = [s for s in sentences if s.strip()]
    if not sentences:
        raise ConfigError("cannot train a subword model: the training split has no text")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type=kind,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="identity",  # decoding must give back the base tokenizer's words
        bos_id=-1,  # <sos> / <eos> are the vocabulary's business, not SentencePiece's
        eos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


class SubwordTokenizer:
    """A base tokenizer followed by SentencePiece: ``tokenize`` gives pieces (``▁`` marks the
    start of a word), ``detokenize`` joins pieces into words and hands them to the base
    detokenizer, so metrics such as sacreBLEU see ordinary text."""

    def __init__(self, base: Tokenizer, model: bytes, *, kind: str) -> None:
        self.base = base
        self.kind = kind
        self.model = model
        self.name = f"{base.name}+{kind}"
        self._processor = spm.SentencePieceProcessor(model_proto=model)

    @property
    def units(self) -> frozenset[str]:
        """Every subword unit of the model (the unknown-word unit excluded)."""
        processor = self._processor
        return frozenset(processor.id_to_piece(i) for i in range(processor.get_piece_size()) if not processor.is_unknown(i))

    def pieces(self, words: Sequence[str]) -> list[str]:
        """The pieces of an already word-tokenized text."""
        return self._processor.encode(" ".join(words), out_type=str)

    def tokenize(self, text: str) -> list[str]:
        return self.pieces(self.base.tokenize(text))

    def words(self, pieces: Sequence[str]) -> list[str]:
        """The base tokenizer's tokens that ``pieces`` spell (what word-level metrics count)."""
        return self._processor.decode(list(pieces)).split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        return self.base.detokenize(self.words(tokens))
