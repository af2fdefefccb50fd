"""From a data config to tokenized, encoded splits and vocabularies: the glue over the readers.

Formats (``data.format``):

- ``builtin``: the generated NL -> Python task (:mod:`seq2seq.data.tasks`), no files needed.
- ``conala``: folder with ``train.json``/``test.json``; the first ``valid_size`` train examples are valid.
- ``django``: folder with ``all.anno``/``all.code``, standard 16000/1000/1805 split.
- ``parallel``: folder with ``{train,valid,test2016|test}.{src_lang,tgt_lang}`` (Multi30k layout).
- ``tsv`` / ``json``: folder with ``train.*`` and optional ``valid.*``/``dev.*`` and ``test.*``
  (``.tsv``; ``.json`` or ``.jsonl``); without a valid file the first ``valid_size`` train
  examples are held out. For TSV the source column is the first of ``src_fields`` in the header.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from seq2seq.config import DataConfig, VocabConfig, short_repr
from seq2seq.data.batching import EncodedPair, encode_pairs
from seq2seq.data.dataset import read_conala, read_django, read_json, read_parallel_dir, read_tsv, read_tsv_header
from seq2seq.data.example import DataError, DataFolderNotFound, Example
from seq2seq.data.shards import open_shards
from seq2seq.data.slots import Slot, extract_slots, slot_code_tokens
from seq2seq.data.subwords import SubwordTokenizer, train_subword_model
from seq2seq.data.tasks import BUILTIN_STREAMS, BUILTIN_TASKS
from seq2seq.data.tokenizers import Tokenizer, build_tokenizer
from seq2seq.data.vocab import Vocab

logger = logging.getLogger(__name__)

TokenPair = tuple[list[str], list[str]]


def _find(root: Path, stems: Sequence[str], suffixes: Sequence[str]) -> Path | None:
    for stem in stems:
        for suffix in suffixes:
            if (root / f"{stem}{suffix}").is_file():
                return root / f"{stem}{suffix}"
    return None


def _read_table(path: Path, config: DataConfig) -> list[Example]:
    if path.suffix == ".tsv":
        header = read_tsv_header(path)  # its errors name the file and line, unlike a bare read_text
        src_column = next((name for name in config.src_fields if name in header), config.src_fields[0])
        return read_tsv(path, src_column=src_column, tgt_column=config.tgt_field, label_map=config.label_map)
    examples = read_json(path, src_fields=config.src_fields, tgt_field=config.tgt_field)
    if config.label_map is not None:
        for example in examples:
            if example.tgt not in config.label_map:
                raise DataError(
                    f"{example.origin}: target {short_repr(example.tgt)} not in data.label_map "
                    f"{short_repr(sorted(config.label_map))}"
                )
        examples = [Example(e.src, config.label_map[e.tgt], e.origin) for e in examples]
    return examples


def _read_table_folder(root: Path, config: DataConfig) -> dict[str, list[Example]]:
    suffixes = [".tsv"] if config.format == "tsv" else [".jsonl", ".json"]
    train = _find(root, ["train"], suffixes)
    if train is None:
        present = sorted(p.name for p in root.iterdir())
        raise DataError(f"{root}: expected train{'|'.join(suffixes)} in the folder; it has {present}")
    splits = {"train": _read_table(train, config)}
    valid = _find(root, ["valid", "dev"], suffixes)
    if valid is not None:
        splits["valid"] = _read_table(valid, config)
    else:
        splits["valid"], splits["train"] = splits["train"][: config.valid_size], splits["train"][config.valid_size :]
    test = _find(root, ["test"], suffixes)
    splits["test"] = _read_table(test, config) if test is not None else []
    return splits


def load_examples(config: DataConfig) -> dict[str, list[Example]]:
    """Raw ``train``/``valid``/``test`` examples for a data config (``test`` may be empty); with
    ``data.reverse`` each example's source and target swapped (a code -> NL model, for reranking)."""
    examples = _read_examples(config)
    if config.reverse:
        examples = {split: list(map(_swapped, items)) for split, items in examples.items()}
    return examples


def stream_examples(config: DataConfig) -> tuple[dict[str, list[Example]], Iterator[Example]]:
    """``({"valid", "test"} lists, the train examples one at a time)``: the built-in task draws its
    train split as it goes, so that ``seq2seq preprocess`` of millions of pairs does not hold them;
    a data folder is read as :func:`load_examples` reads it."""
    if config.format != "builtin":
        examples = load_examples(config)
        return {split: examples.get(split, []) for split in ("valid", "test")}, iter(examples["train"])
    held_out, train = BUILTIN_STREAMS[config.builtin_task](**_builtin_sizes(config))
    if config.reverse:
        held_out = {split: list(map(_swapped, items)) for split, items in held_out.items()}
        train = map(_swapped, train)
    return held_out, train


def _swapped(example: Example) -> Example:
    return replace(example, src=example.tgt, tgt=example.src)


def _builtin_sizes(config: DataConfig) -> dict[str, int]:
    """The built-in generator's arguments: valid and test are 5 % of train each (at least 5) unless
    ``data.builtin_valid_size`` says otherwise."""
    held_out = config.builtin_valid_size or max(config.builtin_train_size // 20, 5)
    return {"seed": config.builtin_seed, "n_train": config.builtin_train_size, "n_valid": held_out, "n_test": held_out}


def _read_examples(config: DataConfig) -> dict[str, list[Example]]:
    if config.format == "builtin":
        return BUILTIN_TASKS[config.builtin_task](**_builtin_sizes(config))
    if config.path is None:
        raise DataError(f"data.path is required for data.format={config.format!r}")
    root = Path(config.path).expanduser()
    if not root.exists():
        raise DataFolderNotFound(f"{root}: data folder not found (data.format={config.format!r})")
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder for data.format={config.format!r}, got a file")
    if config.format == "conala":
        return read_conala(root, valid_size=config.valid_size)
    if config.format == "django":
        return read_django(root)
    if config.format == "parallel":
        test = "test2016" if (root / f"test2016.{config.src_lang}").is_file() else "test"
        return read_parallel_dir(
            root, src_lang=config.src_lang, tgt_lang=config.tgt_lang, splits={"train": "train", "valid": "valid", "test": test}
        )
    return _read_table_folder(root, config)


def tokenize_examples(examples: Sequence[Example], *, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer) -> list[TokenPair]:
    pairs = []
    for example in examples:
        src, tgt = src_tokenizer.tokenize(example.src), tgt_tokenizer.tokenize(example.tgt)
        if not src:
            raise DataError(f"{example.origin or '<input>'}: source has no tokens after tokenization: expected text")
        if not tgt:
            raise DataError(f"{example.origin or '<input>'}: target has no tokens after tokenization: expected text")
        pairs.append((src, tgt))
    return pairs


@dataclass
class Corpus:
    """Everything a run needs from its data: tokenizers, vocabularies and the three splits."""

    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    src_vocab: Vocab
    tgt_vocab: Vocab
    examples: dict[str, list[Example]] = field(default_factory=dict)
    tokens: dict[str, list[TokenPair]] = field(default_factory=dict)
    encoded: dict[str, list[EncodedPair]] = field(default_factory=dict)
    # With data.slots: each example's placeholders (``tokens`` and ``encoded`` hold the slotted text).
    slots: dict[str, list[tuple[Slot, ...]]] = field(default_factory=dict)
    # With data.src_subwords / tgt_subwords: the serialised SentencePiece model of each side ("src", "tgt").
    subword_models: dict[str, bytes] = field(default_factory=dict)

    def reference_tokens(self, split: str) -> list[list[str]]:
        """The target tokens of ``split`` as written (placeholders, if any, not applied): what
        outputs are scored against once their placeholders are restored."""
        if not self.slots:
            return [tgt for _, tgt in self.tokens[split]]
        return [self.tgt_tokenizer.tokenize(example.tgt) for example in self.examples[split]]


def tokenize_split(
    items: Sequence[Example], config: DataConfig, *, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer
) -> tuple[list[TokenPair], list[tuple[Slot, ...]] | None]:
    """Word tokens of one split's examples, and with ``data.slots`` each example's placeholders (None without):
    the quoted values become placeholders in the source text first, then in the code tokens."""
    if not config.slots:
        return tokenize_examples(items, src_tokenizer=src_tokenizer, tgt_tokenizer=tgt_tokenizer), None
    slotted = [extract_slots(example.src) for example in items]
    found = [placeholders for _, placeholders in slotted]
    items = [Example(text, example.tgt, example.origin) for (text, _), example in zip(slotted, items)]
    pairs = tokenize_examples(items, src_tokenizer=src_tokenizer, tgt_tokenizer=tgt_tokenizer)
    return [(src, slot_code_tokens(tgt, placeholders)) for (src, tgt), placeholders in zip(pairs, found)], found


def _word_tokenizers(config: DataConfig) -> tuple[Tokenizer, Tokenizer]:
    return (
        build_tokenizer(config.src_tokenizer, lowercase=config.lowercase_src, lang=config.src_lang),
        build_tokenizer(config.tgt_tokenizer, lowercase=config.lowercase_tgt, lang=config.tgt_lang),
    )


def build_tokenizers(config: DataConfig, subword_models: Mapping[str, bytes] | None = None) -> tuple[Tokenizer, Tokenizer]:
    """The source and target tokenizers of ``config``; a side with subwords wraps its word-level
    tokenizer in the SentencePiece model ``subword_models[side]`` (trained by :func:`build_corpus`,
    kept in the run directory)."""
    tokenizers = list(_word_tokenizers(config))
    for index, side in enumerate(("src", "tgt")):
        kind = getattr(config, f"{side}_subwords")
        if kind != "none":
            if not subword_models or side not in subword_models:
                raise ValueError(f"data.{side}_subwords is {kind}, but no {side} subword model was given")
            tokenizers[index] = SubwordTokenizer(tokenizers[index], subword_models[side], kind=kind)
    return tokenizers[0], tokenizers[1]


def _train_subwords(config: DataConfig, train_words: list[TokenPair]) -> dict[str, bytes]:
    """One SentencePiece model per side that asks for subwords, trained on the train split's words."""
    models = {}
    for index, side in enumerate(("src", "tgt")):
        kind = getattr(config, f"{side}_subwords")
        if kind != "none":
            sentences = (" ".join(pair[index]) for pair in train_words)
            models[side] = train_subword_model(sentences, kind=kind, vocab_size=config.subword_vocab_size)
            logger.info("trained a %s subword model for the %s side", kind, side)
    return models


def build_corpus(
    config: DataConfig,
    vocab_config: VocabConfig,
    *,
    vocabs: tuple[Vocab, Vocab] | None = None,
    subword_models: Mapping[str, bytes] | None = None,
    examples: dict[str, list[Example]] | None = None,
) -> Corpus:
    """Read, tokenize (with ``slots``: placeholders for quoted values, see :mod:`seq2seq.data.slots`;
    with subwords: SentencePiece pieces, the models trained on train unless given), build
    vocabularies from train unless given, filter long train pairs, encode.

    With ``data.shards`` the training pairs are the shards' (streamed, see :mod:`seq2seq.data.shards`)
    and so are the vocabularies; valid and test are the folder's held-out examples, read as here."""
    if config.shards is not None:
        return _sharded_corpus(config, vocab_config, vocabs=vocabs)
    src_tokenizer, tgt_tokenizer = _word_tokenizers(config)
    subwords = (config.src_subwords, config.tgt_subwords) != ("none", "none")
    if subwords and vocabs is not None and not subword_models:  # retrained units would not match the vocabularies
        raise ValueError("the vocabularies of a subword run need its subword models (see checkpoint.load_subword_models)")
    examples = load_examples(config) if examples is None else dict(examples)  # given: a sharded corpus's held-out splits
    slots: dict[str, list[tuple[Slot, ...]]] = {}
    tokens = {}
    for split, items in examples.items():
        tokens[split], found = tokenize_split(items, config, src_tokenizer=src_tokenizer, tgt_tokenizer=tgt_tokenizer)
        if found is not None:
            slots[split] = found
    if subwords:  # words -> pieces, with the models of a run or ones trained on the train split's words
        subword_models = dict(subword_models) if subword_models else _train_subwords(config, tokens["train"])
        src_tokenizer, tgt_tokenizer = build_tokenizers(config, subword_models=subword_models)
        for split, pairs in tokens.items():
            tokens[split] = [(_pieces(src_tokenizer, src), _pieces(tgt_tokenizer, tgt)) for src, tgt in pairs]
    keep = [
        i for i, (src, tgt) in enumerate(tokens["train"]) if len(src) <= config.max_src_len and len(tgt) <= config.max_tgt_len
    ]
    if len(keep) < len(tokens["train"]):
        logger.info("dropped %d training pairs longer than %d/%d tokens", len(tokens["train"]) - len(keep), config.max_src_len, config.max_tgt_len)
        examples["train"] = [examples["train"][i] for i in keep]
        tokens["train"] = [tokens["train"][i] for i in keep]
        if slots:
            slots["train"] = [slots["train"][i] for i in keep]
    if vocabs is None:
        src_vocab = Vocab.build((s for s, _ in tokens["train"]), min_freq=vocab_config.min_freq, max_size=vocab_config.max_size)
        tgt_vocab = Vocab.build((t for _, t in tokens["train"]), min_freq=vocab_config.min_freq, max_size=vocab_config.max_size)
    else:
        src_vocab, tgt_vocab = vocabs
    encoded = {split: encode_pairs(pairs, src_vocab=src_vocab, tgt_vocab=tgt_vocab) for split, pairs in tokens.items()}
    logger.info(
        "data: %s; vocab src %d / tgt %d",
        ", ".join(f"{split} {len(items)}" for split, items in examples.items()), len(src_vocab), len(tgt_vocab),
    )
    return Corpus(
        src_tokenizer, tgt_tokenizer, src_vocab, tgt_vocab, examples, tokens, encoded, slots,
        subword_models=dict(subword_models or {}) if subwords else {},
    )


def _sharded_corpus(config: DataConfig, vocab_config: VocabConfig, *, vocabs: tuple[Vocab, Vocab] | None) -> Corpus:
    if (config.src_subwords, config.tgt_subwords) != ("none", "none"):
        raise DataError("data.shards: subword runs cannot read shards yet; preprocess with word-level tokenizers")
    folder = open_shards(Path(config.shards).expanduser(), data=config, vocabs=vocabs)
    corpus = build_corpus(
        config.model_copy(update={"shards": None}), vocab_config, vocabs=(folder.src_vocab, folder.tgt_vocab),
        examples={"train": [], **folder.held_out},
    )
    corpus.encoded["train"] = folder.train  # type: ignore[assignment]  # a Sequence[EncodedPair] on disk
    logger.info("data: train %d pairs streamed from %s", len(folder.train), config.shards)
    return corpus


def _pieces(tokenizer: Tokenizer, words: list[str]) -> list[str]:
    """``words`` as the subword units of ``tokenizer`` (unchanged for a side without subwords)."""
    return tokenizer.pieces(words) if isinstance(tokenizer, SubwordTokenizer) else words
