"""One entry point for decoding many sources: greedy, sampling or beam search."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seq2seq.decoding.beam import beam_search
from seq2seq.decoding.constraints import PrefixConstraint
from seq2seq.decoding.greedy import Hypothesis, decode_all, greedy_decode
from seq2seq.decoding.sampling import check_sampling_options, sample_decode
from seq2seq.models.seq2seq import Seq2Seq


@dataclass(frozen=True)
class SamplingOptions:
    """Ancestral sampling instead of search: see :func:`seq2seq.decoding.sampling.sample_decode`."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sampling_options(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)

    def generator(self, device: torch.device | str) -> torch.Generator:
        generator = torch.Generator(device=torch.device(device))
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator


def decode_sources(
    model: Seq2Seq,
    sources: list[list[int]],
    *,
    sos_index: int,
    eos_index: int,
    pad_index: int,
    max_len: int,
    beam_size: int = 1,
    nbest: int = 1,
    length_penalty: str = "none",
    alpha: float = 0.6,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    sampling: SamplingOptions | None = None,
    constraint: PrefixConstraint | None = None,
    copy_sources: list[list[int]] | None = None,
    workers: int = 1,
    no_repeat_ngram_size: int = 0,
) -> list[list[Hypothesis]]:
    """Up to ``nbest`` hypotheses per encoded source, best first, in input order.

    With ``sampling`` each source gets one sampled hypothesis (``beam_size`` must be 1). A
    ``constraint`` prunes impossible prefixes in every search. A copy model needs
    ``copy_sources``, each source as extended target ids (``CopyEncoding.src``); its hypotheses
    may then hold ids >= V, the source's unknown words (see ``Vocab.decode``). ``workers`` > 1
    decodes that many batches at once (:func:`seq2seq.decoding.greedy.in_parallel`); sampling,
    whose draws come from one generator in order, needs 1. ``no_repeat_ngram_size`` > 0: no n-gram
    of that size twice in an output (searches only; greedy runs as a beam of one, which equals it).
    """
    check_no_repeat_ngram(no_repeat_ngram_size, model=model, sampling=sampling is not None)
    if nbest > beam_size:
        raise ValueError(f"nbest={nbest} cannot exceed the beam size {beam_size}")
    if getattr(model, "searches_itself", False):  # CTranslate2 runs the whole greedy or beam search itself
        if sampling is not None or constraint is not None:
            raise ValueError("the ctranslate2 runtime does greedy and beam search only: no --sample, no --constrain")
        return model.search(sources, max_len=max_len, beam_size=beam_size, nbest=nbest, length_penalty=length_penalty,
                            batch_size=batch_size)
    if sampling is not None and workers != 1:
        raise ValueError(f"sampling draws from one generator in order: it decodes one batch at a time, not {workers}")
    if sampling is not None and beam_size != 1:
        raise ValueError(f"sampling draws one output per input; it cannot be combined with beam size {beam_size}")
    # One generator for the whole call: a seeded call is reproducible and batches draw independently.
    generator = None if sampling is None else sampling.generator(device)

    def search(
        src: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor, src_copy: torch.Tensor | None, examples: list[int]
    ) -> list[list[Hypothesis]]:
        rules = None if constraint is None else constraint.bind(examples)
        if sampling is not None:
            found = sample_decode(model, src, lengths, mask, sos_index=sos_index, eos_index=eos_index, max_len=max_len,
                                  temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                                  generator=generator, constraint=rules, src_copy=src_copy)
            return [[hypothesis] for hypothesis in found]
        if beam_size == 1 and not no_repeat_ngram_size:
            found = greedy_decode(model, src, lengths, mask, sos_index=sos_index, eos_index=eos_index, max_len=max_len,
                                  constraint=rules, src_copy=src_copy)
            return [[hypothesis] for hypothesis in found]
        return beam_search(  # a beam of one stands for greedy search: no length penalty, as greedy has none
            model, src, lengths, mask, sos_index=sos_index, eos_index=eos_index, pad_index=pad_index,
            beam_size=beam_size, max_len=max_len, nbest=nbest, length_penalty=length_penalty if beam_size > 1 else "none",
            alpha=alpha,
            constraint=rules, src_copy=src_copy, no_repeat_ngram_size=no_repeat_ngram_size,
        )

    return decode_all(sources, search, pad_index=pad_index, batch_size=batch_size, device=device,
                      copy_sources=copy_sources, workers=workers)


def check_no_repeat_ngram(size: int, *, model: object, sampling: bool = False, constrain: str | None = None) -> None:
    """Where ``no_repeat_ngram_size`` applies: greedy and beam search in torch or ONNX Runtime, without
    the grammar constraint (a ban can leave no token the grammar allows, and the output would end
    unparsed); a ValueError that says so otherwise."""
    if size < 0:
        raise ValueError(f"no_repeat_ngram_size must be >= 0, got {size}")
    if size and sampling:
        raise ValueError("no_repeat_ngram_size works with greedy and beam search, not with sampling (not for --sample)")
    if size and getattr(model, "searches_itself", False):
        # CTranslate2 has a ban of its own, but its outputs differed from this package's under it (2026-12-07)
        raise ValueError(f"the ctranslate2 runtime cannot ban repeated n-grams (no_repeat_ngram_size {size}, from "
                         "decode.no_repeat_ngram_size or the request): pass no_repeat_ngram_size 0 "
                         "(--no-repeat-ngram-size 0), or decode with the torch runtime")
    if size and constrain == "grammar":
        raise ValueError("no_repeat_ngram_size cannot be combined with the grammar constraint (a ban can leave no "
                         "token the grammar allows): use --constrain python or none with it, or no_repeat_ngram_size 0")


def decode_workers(requested: int, device: torch.device | str, *, model: object | None = None) -> int:
    """The batches to decode at once for ``decode.workers``: ``requested``, or for 0 (automatic) 2 on
    a CPU where torch has at least 2 intra-op threads, else 1 (a GPU runs one batch at a time, and
    so does a ``model`` that does not compute on torch's threads, such as the ONNX runtime's)."""
    if requested:
        return requested
    if not getattr(model, "runs_on_torch_threads", True):
        return 1
    return 2 if torch.device(device).type == "cpu" and torch.get_num_threads() >= 2 else 1
