"""The facade used by the CLI, evaluation and (later) the server: text in, generated text out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from seq2seq.checkpoint import LoadedRun, load_for_decoding
from seq2seq.data.python_syntax import Unit, completed
from seq2seq.data.slots import Slot, extract_slots, restore_slots
from seq2seq.data.valid_text import check_text
from seq2seq.decoding.beam import normalized_score
from seq2seq.decoding.constraints import prefer_accepted
from seq2seq.decoding.grammar import output_constraint
from seq2seq.decoding.greedy import Hypothesis
from seq2seq.decoding.scoring import step_distributions
from seq2seq.decoding.search import SamplingOptions, check_no_repeat_ngram, decode_sources
from seq2seq.devices import resolve_device
from seq2seq.evaluation.metrics import parses
from seq2seq.models.interface import max_positions, supported_max_len
from seq2seq.models.heads import attention_heads, has_attention_heads


class InputError(ValueError):
    """A generation request the model cannot take (e.g. an empty source)."""


@dataclass(frozen=True)
class Generation:
    source: str
    source_tokens: list[str]  # what the model read (with data.slots: placeholders such as var_0)
    tokens: list[str]  # what the model wrote (placeholders not restored)
    text: str  # the detokenized output, placeholders restored
    score: float  # sum of token log-probabilities, <eos> included
    normalized_score: float  # score divided by the length penalty (equal to score without one)
    attention: torch.Tensor | None  # [T, S]
    parses: bool | None  # None when the target is not Python code
    finished: bool
    heads: torch.Tensor | None = None  # [k, T, S]: each head of a multi-head attention, whose mean is `attention`


class Translator:
    """Loads a run directory once and generates for batches of raw source texts."""

    def __init__(self, run: LoadedRun) -> None:
        self.run = run

    @classmethod
    def from_run_dir(
        cls, run_dir: Path, *, which: str = "best", device: str = "cpu", quantize: str | None = None,
        runtime: str = "torch", ensemble: Sequence[Path] = (),
    ) -> Translator:
        """The run's model, or with ``ensemble`` (more run directories) all of them decoding as one."""
        return cls(load_for_decoding(run_dir, ensemble=ensemble, which=which, device=resolve_device(device),
                                     quantize=quantize, runtime=runtime))

    @property
    def is_code(self) -> bool:
        return self.run.config.data.tgt_tokenizer == "python"

    @property
    def code_unit(self) -> Unit:
        """What one output is for the parse check: a ``program`` or a ``line`` of one (``data.code_unit``)."""
        return self.run.config.data.code_unit or "program"

    def generate(self, texts: list[str], **options: object) -> list[Generation]:
        """The best output for each text; see :meth:`generate_nbest` for the options."""
        return [alternatives[0] for alternatives in self.generate_nbest(texts, **options)]

    def generate_nbest(
        self,
        texts: list[str],
        *,
        max_len: int | None = None,
        batch_size: int | None = None,
        beam_size: int = 1,
        nbest: int = 1,
        length_penalty: str | None = None,
        alpha: float | None = None,
        constrain: str | None = None,
        sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        heads: bool = False,
        no_repeat_ngram_size: int | None = None,
    ) -> list[list[Generation]]:
        """``nbest`` outputs per text, best first: greedy when ``beam_size == 1``, else beam search.
        ``heads``: a multi-head model also returns each head's weights (``Generation.heads``), at the
        cost of one more teacher-forced pass per output.

        ``constrain="grammar"`` keeps only prefixes that Python's parser can complete (every
        finished output parses, :mod:`seq2seq.decoding.grammar`); ``"python"`` only prunes prefixes
        whose brackets can no longer balance; ``"none"`` neither; None (the default) takes the
        run's ``decode.constrain``. With a constraint and a beam, the whole beam is kept and the
        outputs that parse move ahead of those that do not (never executed), then ``nbest`` are kept.
        ``sample=True`` draws one output per text instead (temperature, top-k, top-p; seeded
        when ``seed`` is given). ``no_repeat_ngram_size``: no n-gram of that size twice in an
        output (0 = off; None takes the run's ``decode.no_repeat_ngram_size``). ``length_penalty`` and
        ``alpha``: how a beam ranks finished outputs of different lengths (None takes the run's
        ``decode.length_penalty`` and ``decode.alpha``; greedy search and sampling compare none).
        """
        run = self.run
        sampling = None
        if sample:
            if beam_size != 1 or nbest != 1:
                raise InputError("sampling draws one output per input: it cannot be combined with beam or nbest")
            try:
                sampling = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
            except ValueError as error:  # an option out of range is the caller's mistake
                raise InputError(str(error)) from None
        if nbest > beam_size:
            raise InputError(f"nbest={nbest} cannot exceed the beam size {beam_size}")
        if no_repeat_ngram_size is None:
            no_repeat_ngram_size = 0 if sample else run.config.decode.no_repeat_ngram_size
        alpha = run.config.decode.alpha if alpha is None else alpha
        if beam_size == 1:
            length_penalty = "none"
        elif length_penalty is None:
            length_penalty = run.config.decode.length_penalty
        if constrain is None:
            constrain = run.config.decode.constrain if self.is_code else "none"
        if constrain not in ("none", "python", "grammar"):
            raise InputError(f"constrain={constrain!r}: expected 'grammar', 'python' or 'none'")
        if constrain != "none" and not self.is_code:
            raise InputError(f"constrain={constrain!r} needs a model whose target tokenizer is 'python'")
        constrain = None if constrain == "none" else constrain
        source_tokens, slots = [], []
        for number, text in enumerate(texts, start=1):
            check_text(text, what=f"input {number}: the text", error=InputError)  # before it can reach a log or a file
            placeholders: tuple[Slot, ...] = ()
            if run.config.data.slots:  # quoted values -> placeholders, restored in the outputs
                text, placeholders = extract_slots(text)
            slots.append(placeholders)
            tokens = run.src_tokenizer.tokenize(text)
            if not tokens:
                raise InputError(f"input {number}: empty source text: expected at least one word")
            source_tokens.append(tokens)
        limit = max_positions(run.model)
        too_long = [n for n, tokens in enumerate(source_tokens, start=1) if limit is not None and len(tokens) > limit]
        if too_long:
            raise InputError(f"input {too_long[0]}: {len(source_tokens[too_long[0] - 1])} tokens, but this model's learned "
                             f"positions cover {limit} (model.transformer.max_positions); shorten the input")
        vocab = run.tgt_vocab
        # A copy model also reads each source in the target vocabulary extended by its unknown words.
        copies = [vocab.encode_copy_source(tokens) for tokens in source_tokens] if run.model.copies else None
        if getattr(run.model, "searches_itself", False) and (sampling is not None or constrain or length_penalty != "none"):
            # decode_sources hands CTranslate2 the whole search; its length normalization (length ** alpha)
            # picked other outputs than ours with --length-penalty average at alpha 1 and 2, so none is offered
            raise InputError("the ctranslate2 runtime does greedy and beam search only, without a length penalty: "
                             "no --sample, no --constrain, and --length-penalty none or left out")
        try:
            check_no_repeat_ngram(no_repeat_ngram_size, model=run.model, sampling=sampling is not None, constrain=constrain)
        except ValueError as error:  # an option that does not apply is the caller's mistake
            raise InputError(str(error)) from None
        found = decode_sources(
            run.model, [run.src_vocab.encode(tokens) for tokens in source_tokens],
            sos_index=vocab.sos_index, eos_index=vocab.eos_index, pad_index=vocab.pad_index,
            max_len=supported_max_len(run.model, max_len or run.config.decode.max_len), beam_size=beam_size,
            nbest=beam_size if constrain else nbest, length_penalty=length_penalty, alpha=alpha,
            batch_size=batch_size or run.config.decode.batch_size, device=run.device, sampling=sampling,
            constraint=output_constraint(constrain, vocab, run.tgt_tokenizer, unit=self.code_unit,
                                         beam_size=beam_size, sampling=sampling is not None,
                                         slots=slots if run.config.data.slots else None,
                                         copy_words=None if copies is None else [words for _, words in copies]),
            copy_sources=None if copies is None else [ids for ids, _ in copies], no_repeat_ngram_size=no_repeat_ngram_size,
        )
        oovs = [()] * len(texts) if copies is None else [words for _, words in copies]  # what ids >= V stand for
        results = []
        for text, src_tokens, hypotheses, src_oovs, src_slots in zip(texts, source_tokens, found, oovs, slots):
            generations = [
                self._generation(text, src_tokens, h, length_penalty, alpha, src_oovs, src_slots, heads,
                                 complete=constrain == "grammar") for h in hypotheses
            ]
            if constrain:
                generations = prefer_accepted(generations, lambda g: bool(g.parses) and g.finished)
            results.append(generations[:nbest])
        return results

    def step_probabilities(self, generation: Generation) -> torch.Tensor:
        """The next-token distribution at every step of ``generation``'s output, [T, V] on the CPU.

        Row t is what the decoder saw when it chose output token t (``<eos>`` last when the output
        finished); column v is ``self.run.tgt_vocab.itos[v]``. A copy model has V + n columns:
        column V + j is the j-th source word outside the target vocabulary (``Vocab.encode_copy_source``).
        """
        run = self.run
        vocab = run.tgt_vocab
        src_ids = run.src_vocab.encode(generation.source_tokens)
        src_copy, oovs = vocab.encode_copy_source(generation.source_tokens) if run.model.copies else (None, ())
        tgt_ids = vocab.encode(generation.tokens, add_sos=True, add_eos=generation.finished, oovs=oovs)
        src = torch.tensor([src_ids], device=run.device)
        lengths = torch.tensor([len(src_ids)])
        mask = torch.ones_like(src, dtype=torch.bool)
        tgt = torch.tensor([tgt_ids], device=run.device)
        copy = None if src_copy is None else torch.tensor([src_copy], device=run.device)
        return step_distributions(run.model, src, lengths, mask, tgt, src_copy=copy)[0].cpu()

    def _heads(self, src_tokens: list[str], hypothesis: Hypothesis, oovs: tuple[str, ...]) -> torch.Tensor | None:
        """Each head's weights [k, T, S] for the output of a multi-head or Transformer model (their mean
        is ``attention``), else None."""
        run = self.run
        if not has_attention_heads(run.model):
            return None
        src = torch.tensor([run.src_vocab.encode(src_tokens)], device=run.device)
        copy = None
        if run.model.copies:
            copy = torch.tensor([run.tgt_vocab.encode_copy_source(src_tokens)[0]], device=run.device)
        emitted = hypothesis.tokens + ([run.tgt_vocab.eos_index] if hypothesis.finished else [])
        tgt_input = torch.tensor([[run.tgt_vocab.sos_index, *emitted[:-1]]] if emitted else [[run.tgt_vocab.sos_index]],
                                 device=run.device)
        heads = attention_heads(run.model, src, torch.tensor([src.size(1)]), torch.ones_like(src, dtype=torch.bool),
                                tgt_input, src_copy=copy)
        return None if heads is None else heads[0, :, : len(emitted) or 1].float().cpu()  # [k, T, S]

    def _generation(
        self, text: str, src_tokens: list[str], hypothesis: Hypothesis, length_penalty: str, alpha: float,
        oovs: tuple[str, ...],
        slots: tuple[Slot, ...],
        heads: bool = False,
        complete: bool = False,
    ) -> Generation:
        """``complete``: an output cut by max_len gets its brackets closed, or is shortened, until it
        parses (``--constrain grammar``; ``tokens`` stay what the search wrote)."""
        tokens = self.run.tgt_vocab.decode(hypothesis.tokens, oovs=oovs)
        written = restore_slots(tokens, slots) if slots else tokens
        if complete and not hypothesis.finished:
            written = completed(written, self.run.tgt_tokenizer.detokenize, unit=self.code_unit)
        output = self.run.tgt_tokenizer.detokenize(written)
        return Generation(
            source=text,
            source_tokens=src_tokens,
            tokens=tokens,
            text=output,
            score=hypothesis.score,
            normalized_score=normalized_score(hypothesis, length_penalty, alpha),
            attention=hypothesis.attention,
            parses=parses(output, unit=self.code_unit) if self.is_code else None,  # parsed only; never executed
            finished=hypothesis.finished,
            heads=self._heads(src_tokens, hypothesis, oovs) if heads and hypothesis.attention is not None else None,
        )
