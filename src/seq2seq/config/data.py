"""``data`` and ``vocab``: where the pairs come from, how they are tokenized, which words are kept."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from seq2seq.config.errors import StrictModel


class DataConfig(StrictModel):
    """Where the pairs come from and how they are tokenized."""

    format: Literal["builtin", "conala", "django", "parallel", "tsv", "json"] = "builtin"
    path: str | None = Field(default=None, description="folder (conala, django, parallel) or file (tsv, json)")
    shards: str | None = Field(
        default=None,
        description="a `seq2seq preprocess` folder: the training pairs are streamed from its memory-mapped shards "
        "(made with these data settings, checked against its manifest) instead of being read and encoded here",
    )
    builtin_task: Literal["nl2code"] = "nl2code"
    builtin_train_size: int = Field(default=20000, ge=10)
    builtin_valid_size: int | None = Field(
        default=None, ge=5, description="built-in task: pairs in valid and in test each (default: builtin_train_size / 20)"
    )
    builtin_seed: int = 1234
    src_lang: str = Field(default="de", description="parallel: file suffix of the source; the Moses tokenizer's source language")
    tgt_lang: str = Field(default="en", description="parallel: file suffix of the target; the Moses tokenizer's target language")
    src_fields: list[str] = Field(default_factory=lambda: ["rewritten_intent", "intent"])
    tgt_field: str = "snippet"
    label_map: dict[str, str] | None = Field(default=None, description="tsv/json: raw target value -> target text")
    valid_size: int = Field(default=400, ge=1, description="conala, or tsv/json without a valid file: first N train examples")
    src_tokenizer: Literal["word", "space", "moses", "python"] = "word"
    tgt_tokenizer: Literal["word", "space", "moses", "python"] = "python"
    lowercase_src: bool = True
    lowercase_tgt: bool = Field(default=False, description="lower-case targets too; translation BLEU then compares lower-cased text")
    max_src_len: int = Field(default=100, ge=1, description="longer training pairs are dropped")
    max_tgt_len: int = Field(default=100, ge=1)
    src_subwords: Literal["none", "bpe", "unigram"] = Field(
        default="none",
        description="split source words into SentencePiece subword units (bpe or unigram) trained on the train split",
    )
    tgt_subwords: Literal["none", "bpe", "unigram"] = Field(
        default="none", description="the same for the target; outputs are joined back into words before scoring"
    )
    subword_vocab_size: int = Field(default=8000, ge=50, description="at most this many subword units per side")
    slots: bool = Field(
        default=False,
        description="NL -> code: quoted values in the source become placeholders (var_0, str_0) in source and "
        "target, restored in outputs (as the CoNaLa baseline and tranX do)",
    )
    reverse: bool = Field(
        default=False,
        description="swap source and target after reading (e.g. a code -> NL model that scores how well an output "
        "explains its input, for seq2seq rerank); the tokenizers and lengths then apply to the swapped sides",
    )
    code_unit: Literal["program", "line"] | None = Field(
        default=None,
        description="python targets: what one output is, for the parse rate and --constrain grammar: a whole "
        "'program', or a 'line' of a file (a block header or an else/except clause counts, as tranX scores "
        "Django); default: line for django, else program",
    )

    @model_validator(mode="after")
    def _code_options(self) -> DataConfig:
        if self.code_unit is None:
            self.code_unit = "line" if self.format == "django" else "program"
        if self.lowercase_tgt and self.tgt_tokenizer == "python":
            raise ValueError("lowercase_tgt: true cannot be used with tgt_tokenizer: python (code is case sensitive)")
        if self.slots and self.reverse:
            raise ValueError("slots: true cannot be combined with reverse: true (placeholders are taken from the "
                             "natural-language side, which reverse makes the target)")
        if self.slots and self.tgt_tokenizer != "python":
            raise ValueError(f"slots: true needs tgt_tokenizer: python (placeholders stand for code values); got {self.tgt_tokenizer}")
        if self.slots and (self.src_subwords, self.tgt_subwords) != ("none", "none"):
            raise ValueError("slots: true cannot be combined with src_subwords / tgt_subwords (placeholders must stay whole tokens)")
        for side in ("src", "tgt"):  # pieces are joined back into words at spaces, and code tokens may hold spaces
            if getattr(self, f"{side}_subwords") != "none" and getattr(self, f"{side}_tokenizer") == "python":
                raise ValueError(f"{side}_subwords needs a word-level {side}_tokenizer (word, space or moses), not python")
        return self


class VocabConfig(StrictModel):
    min_freq: int = Field(default=1, ge=1)
    max_size: int | None = Field(default=None, ge=5)

