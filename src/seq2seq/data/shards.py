"""A numericalized training corpus as memory-mapped NumPy shards, for corpora larger than memory.

``seq2seq preprocess`` tokenizes and encodes a corpus once and writes, into one folder::

    manifest.json              what follows, with the data settings, counts and SHA-256 checksums
    src_vocab.json, tgt_vocab.json
    train-00000.src.npy        int32: the source ids of the shard's pairs, one after the other
    train-00000.tgt.npy        int32: the target ids (<sos> ... <eos>), one after the other
    train-00000.offsets.npy    int64 [n + 1, 2]: where each pair's source and target start
    valid.json, test.json      the held-out examples as text (small; evaluation reads their raw text)

Training (``data.shards``) opens the shards with ``numpy.load(mmap_mode="r")``: a pair is read
when its batch is built, so the process holds only each pair's lengths (8 bytes) and the current
batches, whatever the corpus size. The manifest is written last, so a folder without one is an
interrupted preprocess; its checksums and vocabulary hashes are checked on opening.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seq2seq.config import DataConfig
from seq2seq.data.batching import EncodedPair
from seq2seq.data.example import DataError, Example
from seq2seq.data.vocab import Vocab
from seq2seq.run_files import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

FORMAT = "seq2seq-shards"
VERSION = 1
HELD_OUT = ("valid", "test")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):  # 1 MiB at a time: memory stays flat for any shard size
            digest.update(block)
    return digest.hexdigest()


def vocab_hash(vocab: Vocab) -> str:
    return hashlib.sha256(vocab.to_json().encode("utf-8")).hexdigest()


def _data_settings(data: DataConfig) -> dict:
    """The data settings that made the shards (``shards`` itself left out): a run must read them alike."""
    return data.model_dump(mode="json", exclude={"shards"})


def _save_array(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    atomic_write(path, write)


def write_id_shard(folder: Path, name: str, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]]) -> dict:
    """Write one shard of pairs given as id lists; return its manifest entry (files, count, checksums)."""
    offsets = np.zeros((len(src) + 1, 2), dtype=np.int64)  # [n + 1, 2]: source and target starts
    offsets[1:, 0] = np.cumsum([len(ids) for ids in src])
    offsets[1:, 1] = np.cumsum([len(ids) for ids in tgt])
    arrays = {
        "src": np.fromiter((i for ids in src for i in ids), dtype=np.int32, count=int(offsets[-1, 0])),
        "tgt": np.fromiter((i for ids in tgt for i in ids), dtype=np.int32, count=int(offsets[-1, 1])),
        "offsets": offsets,
    }
    files = {key: f"{name}.{key}.npy" for key in arrays}
    for key, array in arrays.items():
        _save_array(folder / files[key], array)
    return {"pairs": len(src), "files": files, "sha256": {key: _sha256(folder / file) for key, file in files.items()}}


def remap_shard(folder: Path, entry: dict, *, src_table: np.ndarray, tgt_table: np.ndarray) -> dict:
    """Rewrite a shard's ids through lookup tables (provisional id -> vocabulary id); the entry with new checksums."""
    sha256 = dict(entry["sha256"])
    for key, table in (("src", src_table), ("tgt", tgt_table)):
        path = folder / entry["files"][key]
        _save_array(path, table[np.load(path)])
        sha256[key] = _sha256(path)
    return {**entry, "sha256": sha256}


def write_manifest(
    folder: Path, *, shards: Sequence[dict], held_out: dict[str, Sequence[Example]], src_vocab: Vocab, tgt_vocab: Vocab,
    data: DataConfig,
) -> Path:
    """The vocabularies, the held-out examples and, last, ``manifest.json`` (returned): the folder is complete."""
    atomic_write_text(folder / "src_vocab.json", src_vocab.to_json())
    atomic_write_text(folder / "tgt_vocab.json", tgt_vocab.to_json())
    for split in HELD_OUT:
        examples = [{"src": e.src, "tgt": e.tgt, "origin": e.origin} for e in held_out.get(split, [])]
        atomic_write_text(folder / f"{split}.json", json.dumps(examples, ensure_ascii=False))
    manifest = {
        "format": FORMAT, "version": VERSION, "data": _data_settings(data),
        "src_vocab_sha256": vocab_hash(src_vocab), "tgt_vocab_sha256": vocab_hash(tgt_vocab),
        "pairs": {"train": sum(entry["pairs"] for entry in shards), **{split: len(held_out.get(split, [])) for split in HELD_OUT}},
        "shards": list(shards),
    }
    path = folder / "manifest.json"
    atomic_write_text(path, json.dumps(manifest, indent=1))
    logger.info("wrote %d training pairs in %d shard(s) to %s", manifest["pairs"]["train"], len(shards), folder)
    return path


@dataclass(frozen=True)
class _Shard:
    src: np.ndarray  # memory-mapped int32 ids
    tgt: np.ndarray
    offsets: np.ndarray  # [n + 1, 2]


class ShardedPairs(Sequence[EncodedPair]):
    """The training pairs of a shard folder, read from the memory-mapped shards one pair at a time."""

    def __init__(self, shards: Sequence[_Shard]) -> None:
        self._shards = list(shards)
        self._starts = np.cumsum([0] + [len(shard.offsets) - 1 for shard in self._shards]).tolist()

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"pair {index} of {len(self)}")
        index %= len(self)
        number = bisect.bisect_right(self._starts, index) - 1
        shard, row = self._shards[number], index - self._starts[number]
        (src_start, tgt_start), (src_end, tgt_end) = shard.offsets[row], shard.offsets[row + 1]
        return EncodedPair(src=shard.src[src_start:src_end].tolist(), tgt=shard.tgt[tgt_start:tgt_end].tolist())

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(source lengths, target lengths) of every pair, from the offsets alone (batching sorts by them)."""
        src = np.concatenate([np.diff(shard.offsets[:, 0]) for shard in self._shards] or [np.zeros(0, np.int64)])
        tgt = np.concatenate([np.diff(shard.offsets[:, 1]) for shard in self._shards] or [np.zeros(0, np.int64)])
        return src.astype(np.int32), tgt.astype(np.int32)


def read_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not path.is_file():
        raise DataError(f"{path}: no shard manifest (not a `seq2seq preprocess` folder, or an interrupted one)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: unreadable manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DataError(f"{path}: not a {FORMAT} manifest of version {VERSION}")
    return manifest


@dataclass
class ShardFolder:
    """An opened, checked shard folder."""

    train: ShardedPairs
    held_out: dict[str, list[Example]]
    src_vocab: Vocab
    tgt_vocab: Vocab
    data: dict  # the data settings that made the shards


def open_shards(folder: Path, *, data: DataConfig | None = None, vocabs: tuple[Vocab, Vocab] | None = None) -> ShardFolder:
    """Open ``folder`` after checking every shard's checksum, the vocabularies against the manifest
    (and against ``vocabs``, a resumed run's), and the data settings against ``data``'s."""
    manifest = read_manifest(folder)
    where = folder / "manifest.json"
    src_vocab, tgt_vocab = Vocab.load(folder / "src_vocab.json"), Vocab.load(folder / "tgt_vocab.json")
    for side, vocab in (("src", src_vocab), ("tgt", tgt_vocab)):
        if vocab_hash(vocab) != manifest.get(f"{side}_vocab_sha256"):
            raise DataError(f"{where}: {side}_vocab.json does not match the manifest's vocabulary hash")
    if vocabs is not None and (vocabs[0].itos, vocabs[1].itos) != (src_vocab.itos, tgt_vocab.itos):
        raise DataError(f"{where}: the shards' vocabularies are not this run's (sha256 {vocab_hash(src_vocab)[:12]}/"
                        f"{vocab_hash(tgt_vocab)[:12]} vs {vocab_hash(vocabs[0])[:12]}/{vocab_hash(vocabs[1])[:12]})")
    if data is not None:  # the manifest's settings with today's defaults for keys added since
        try:
            made = _data_settings(DataConfig.model_validate(manifest["data"]))
        except ValueError as error:
            raise DataError(f"{where}: its data settings are not valid here ({str(error).splitlines()[0]})") from None
        differ = sorted(k for k, v in _data_settings(data).items() if made.get(k) != v)
        if differ:
            raise DataError(f"{where}: made with other data settings ({', '.join(f'data.{k}' for k in differ)})")
    shards = []
    for entry in manifest["shards"]:
        arrays = {}
        for key, name in entry["files"].items():
            if _sha256(folder / name) != entry["sha256"][key]:
                raise DataError(f"{folder / name}: checksum does not match the manifest (damaged or replaced shard)")
            arrays[key] = np.load(folder / name, mmap_mode="r")
        shards.append(_Shard(arrays["src"], arrays["tgt"], arrays["offsets"]))
    held_out = {}
    for split in HELD_OUT:
        records = json.loads((folder / f"{split}.json").read_text(encoding="utf-8"))
        held_out[split] = [Example(r["src"], r["tgt"], r["origin"]) for r in records]
    train = ShardedPairs(shards)
    if len(train) != manifest["pairs"]["train"]:
        raise DataError(f"{where}: the shards hold {len(train)} training pairs, the manifest counts {manifest['pairs']['train']}")
    return ShardFolder(train, held_out, src_vocab, tgt_vocab, manifest["data"])
