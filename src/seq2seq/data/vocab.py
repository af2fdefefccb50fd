"""Token <-> index mapping with the four special tokens, built from token counts, stored as JSON."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, UNK, SOS, EOS = "<pad>", "<unk>", "<sos>", "<eos>"
SPECIALS = (PAD, UNK, SOS, EOS)


class Vocab:
    """A fixed list of tokens; index 0..3 are ``<pad> <unk> <sos> <eos>`` in that order."""

    pad_index = 0
    unk_index = 1
    sos_index = 2
    eos_index = 3

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {tuple(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            duplicates = [t for t, n in Counter(tokens).items() if n > 1]
            raise ValueError(f"duplicate tokens in vocabulary: {duplicates[:5]}")
        self.itos: list[str] = list(tokens)
        self.stoi: dict[str, int] = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def build(
        cls, sequences: Iterable[Sequence[str]], *, min_freq: int = 1, max_size: int | None = None
    ) -> Vocab:
        """Most frequent tokens first (ties broken alphabetically so the result is deterministic).

        ``max_size`` counts the special tokens too.
        """
        counts: Counter[str] = Counter()
        for tokens in sequences:
            counts.update(tokens)
        return cls.from_counts(counts, min_freq=min_freq, max_size=max_size)

    @classmethod
    def from_counts(cls, counts: Counter[str], *, min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """:meth:`build` from token counts already made (e.g. shard by shard); ``counts`` is changed."""
        for special in SPECIALS:
            counts.pop(special, None)
        ranked = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *ranked])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(
        self, tokens: Sequence[str], *, add_sos: bool = False, add_eos: bool = False, oovs: Sequence[str] = ()
    ) -> list[int]:
        """Tokens to indices; an unknown token is ``<unk>``, unless it is the j-th of ``oovs`` (the
        source words a copy model can point to, see :meth:`encode_copy_source`): then ``len(self) + j``."""
        extended = {token: len(self) + j for j, token in enumerate(oovs)}
        ids = [self.stoi.get(token, extended.get(token, self.unk_index)) for token in tokens]
        if add_sos:
            ids.insert(0, self.sos_index)
        if add_eos:
            ids.append(self.eos_index)
        return ids

    def encode_copy_source(self, tokens: Sequence[str]) -> tuple[list[int], tuple[str, ...]]:
        """A source sentence in this (target) vocabulary extended by its own unknown words, for the
        copy mechanism (See et al. 2017, section 2.2): a known token gets its index, the j-th distinct
        unknown one ``len(self) + j``. Returns the indices and the unknown words in order of first
        occurrence (pass them as ``oovs`` to :meth:`encode` and :meth:`decode`)."""
        oovs = tuple(dict.fromkeys(token for token in tokens if token not in self.stoi))
        return self.encode(tokens, oovs=oovs), oovs

    def decode(self, ids: Iterable[int], *, strip_specials: bool = True, oovs: Sequence[str] = ()) -> list[str]:
        """Indices to tokens, stopping at the first ``<eos>`` when ``strip_specials``.

        An index ``len(self) + j`` (copied by a copy model) is ``oovs[j]``, the source's j-th unknown
        word; one beyond ``oovs`` (another example's, possible only by a near-zero-probability pick) is ``<unk>``.
        """
        tokens = []
        for index in ids:
            index = int(index)
            if strip_specials and index == self.eos_index:
                break
            if strip_specials and index in (self.pad_index, self.sos_index):
                continue
            if index < len(self):
                tokens.append(self.itos[index])
            else:
                j = index - len(self)
                tokens.append(oovs[j] if j < len(oovs) else UNK)
        return tokens

    def to_json(self) -> str:
        return json.dumps({"tokens": self.itos}, ensure_ascii=False, indent=0)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocab:
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path}: vocabulary file not found") from None
        except OSError as error:
            raise ValueError(f"{path}: cannot read the vocabulary file ({error.strerror or error})") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: malformed vocabulary JSON: {error.msg}") from None
        except (ValueError, RecursionError) as error:  # undecodable bytes, absurd nesting or a 5000-digit int
            problem = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            raise ValueError(f"{path}: malformed vocabulary JSON: {problem}") from None
        tokens = payload.get("tokens") if isinstance(payload, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{path}: expected an object {{\"tokens\": [str, ...]}}")
        try:
            return cls(tokens)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
