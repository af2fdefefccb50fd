"""Decoding a Transformer run with its CTranslate2 export (``seq2seq export RUN --format ctranslate2``,
written by :mod:`seq2seq.models.ctranslate2_export`): ``--runtime ctranslate2`` on generate.

CTranslate2 runs the whole search itself (``Translator.translate_batch``), so unlike the ONNX
stand-ins this model has no ``decoder.step`` for :mod:`seq2seq.decoding`: it offers ``search``,
which :func:`seq2seq.decoding.search.decode_sources` calls instead. Greedy search and beam search without
a length penalty are supported, in float32 or (``--quantize int8``) int8; the outputs' per-token log-probabilities come from CTranslate2's
``score_batch`` on the found tokens, so ``Hypothesis.score`` means what it means for torch, and their
attention is CTranslate2's (the last layer's cross-attention, every head averaged, as the export
asks: what torch's Transformer returns too).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from seq2seq.data.vocab import Vocab
from seq2seq.decoding.greedy import Hypothesis
from seq2seq.models.transformer import Transformer

MANIFEST = "ctranslate2.json"


class CTranslate2Model(nn.Module):
    """A run's CTranslate2 export behind ``search``; ``reference`` (the torch model whose weights
    were exported) describes the model (parameter count, position limit) and recomputes the last
    cross-attention's heads on request (:mod:`seq2seq.models.heads`)."""

    runs_on_torch_threads = False  # CTranslate2 has its own threads
    searches_itself = True  # decode_sources calls search() instead of its own search loops

    def __init__(self, folder: Path, reference: Transformer, *, src_itos: Sequence[str], tgt_itos: Sequence[str],
                 threads: int = 1, compute_type: str = "float32") -> None:
        super().__init__()
        import ctranslate2

        self.reference = reference
        # the position table written at export: CTranslate2 has no position beyond it
        self.positions = int(json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["positions"])
        # compute_type "int8": CTranslate2 quantizes the float32 weights as it loads them (int8 products)
        self.translator = ctranslate2.Translator(str(folder), device="cpu", inter_threads=1, intra_threads=threads,
                                                 compute_type=compute_type)
        self.src_itos, self.tgt_itos = list(src_itos), list(tgt_itos)
        self.tgt_index = {token: index for index, token in enumerate(self.tgt_itos)}
        self.eos_token = self.tgt_itos[Vocab.eos_index]  # the export's eos_token

    @property
    def copies(self) -> bool:
        return False

    @property
    def max_positions(self) -> int:
        """The exported position table's rows (learned: model.transformer.max_positions; sinusoids: as
        many as the export wrote), the longest source and the most decoding steps."""
        return self.positions

    def search(
        self, sources: Sequence[Sequence[int]], *, max_len: int, beam_size: int = 1, nbest: int = 1,
        length_penalty: str = "none", batch_size: int = 64,
    ) -> list[list[Hypothesis]]:
        """``nbest`` hypotheses per source (ids in the source vocabulary), best first."""
        if length_penalty != "none":
            raise ValueError(f"the CTranslate2 runtime decodes without a length penalty, got {length_penalty!r} (a run's "
                             "decode.length_penalty unless --length-penalty says otherwise): give --length-penalty none")
        found: list[list[Hypothesis]] = []
        for start in range(0, len(sources), batch_size):
            tokens = [[self.src_itos[i] for i in ids] for ids in sources[start : start + batch_size]]
            # length_penalty 0: rank by the sum of log-probabilities, as seq2seq.decoding does
            results = self.translator.translate_batch(
                tokens, beam_size=beam_size, num_hypotheses=nbest, max_decoding_length=max_len, min_decoding_length=0,
                length_penalty=0,
                max_input_length=0,  # no truncation: the Translator refuses sources beyond the positions
                # the last layer's cross-attention, its heads averaged (the export's alignment_heads), with
                # the <eos> step's row: the same [T, S] as torch's search returns
                return_attention=True, return_end_token=True,
            )
            first_rows = self._first_attention_rows(tokens) if beam_size > 1 else None
            # (source, output without <eos>, whether it ended with <eos>, attention) per hypothesis, in order
            rows = [(source, *self._split_end(output), attention if first_rows is None else [first_rows[i], *attention[1:]])
                    for i, (source, result) in enumerate(zip(tokens, results, strict=True))
                    for output, attention in zip(result.hypotheses, result.attention, strict=True)]
            scored = iter(self.translator.score_batch([row[0] for row in rows], [row[1] for row in rows]))  # + <eos>, one call
            hypotheses = iter(self._hypothesis(output, finished, next(scored).log_probs, attention, len(source))
                              for source, output, finished, attention in rows)
            found += [[next(hypotheses) for _ in result.hypotheses] for result in results]
        return found

    def _first_attention_rows(self, tokens: list[list[str]]) -> list[list[float]]:
        """Each source's attention at the first step (it reads only the source and <sos>, so every
        hypothesis shares it). CTranslate2 4.8's beam search returns another source's first row for
        sources of different lengths in one batch (its later rows are right; measured against
        torch, tests/test_ctranslate2.py), so beam search takes this row from one greedy step."""
        first = self.translator.translate_batch(tokens, beam_size=1, max_decoding_length=1, min_decoding_length=0,
                                                max_input_length=0, return_attention=True, return_end_token=True)
        return [result.attention[0][0] for result in first]

    def _split_end(self, output: list[str]) -> tuple[list[str], bool]:
        """``output`` without its final <eos>, and whether it had one (False: cut at max_len)."""
        finished = bool(output) and output[-1] == self.eos_token
        return (output[:-1] if finished else output), finished

    def _hypothesis(self, output: list[str], finished: bool, log_probs: Sequence[float],
                    attention: Sequence[Sequence[float]], src_length: int) -> Hypothesis:
        """``log_probs``: CTranslate2's scores of ``output`` followed by <eos>; ``attention``: a row per
        step that CTranslate2 took (the <eos> step's included)."""
        kept = list(log_probs if finished else log_probs[:-1])  # a cut output never chose <eos>
        weights = torch.tensor(attention, dtype=torch.float32) if attention else torch.zeros(0, src_length)
        return Hypothesis([self.tgt_index[token] for token in output], kept, weights[: len(kept), :src_length], finished)  # [T, S]

    def encode(self, *args: object, **kwargs: object):
        raise ValueError("the CTranslate2 runtime searches inside CTranslate2: it has no encoder or decoder "
                         "step for seq2seq's own search (use --runtime torch or onnx)")

    def forward(self, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise ValueError("the CTranslate2 runtime only decodes: it computes no teacher-forced logits "
                         "(use --runtime torch or onnx)")
