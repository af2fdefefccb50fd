"""The facade used by the CLI, evaluation and (later) the server: text in, generated text out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from seq2seq.checkpoint import LoadedRun, load_run
from seq2seq.decoding.greedy import greedy_decode_all
from seq2seq.evaluation.metrics import parses


class InputError(ValueError):
    """A generation request the model cannot take (e.g. an empty source)."""


@dataclass(frozen=True)
class Generation:
    source: str
    source_tokens: list[str]
    tokens: list[str]
    text: str
    score: float  # sum of token log-probabilities, <eos> included
    attention: torch.Tensor | None  # [T, S]
    parses: bool | None  # None when the target is not Python code
    finished: bool


class Translator:
    """Loads a run directory once and generates for batches of raw source texts."""

    def __init__(self, run: LoadedRun) -> None:
        self.run = run

    @classmethod
    def from_run_dir(cls, run_dir: Path, *, which: str = "best", device: str = "cpu") -> Translator:
        from seq2seq.training.trainer import resolve_device

        return cls(load_run(run_dir, which=which, device=resolve_device(device)))

    @property
    def is_code(self) -> bool:
        return self.run.config.data.tgt_tokenizer == "python"

    def generate(self, texts: list[str], *, max_len: int | None = None, batch_size: int | None = None) -> list[Generation]:
        run = self.run
        source_tokens = []
        for number, text in enumerate(texts, start=1):
            tokens = run.src_tokenizer.tokenize(text)
            if not tokens:
                raise InputError(f"input {number}: empty source text: expected at least one word")
            source_tokens.append(tokens)
        hypotheses = greedy_decode_all(
            run.model,
            [run.src_vocab.encode(tokens) for tokens in source_tokens],
            sos_index=run.tgt_vocab.sos_index,
            eos_index=run.tgt_vocab.eos_index,
            pad_index=run.tgt_vocab.pad_index,
            max_len=max_len or run.config.decode.max_len,
            batch_size=batch_size or run.config.decode.batch_size,
            device=run.device,
        )
        results = []
        for text, src_tokens, hypothesis in zip(texts, source_tokens, hypotheses):
            tokens = run.tgt_vocab.decode(hypothesis.tokens)
            output = run.tgt_tokenizer.detokenize(tokens)
            results.append(
                Generation(
                    source=text,
                    source_tokens=src_tokens,
                    tokens=tokens,
                    text=output,
                    score=hypothesis.score,
                    attention=hypothesis.attention,
                    parses=parses(output) if self.is_code else None,
                    finished=hypothesis.finished,
                )
            )
        return results
