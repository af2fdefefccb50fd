"""The Python API: ``seq2seq.load(run_dir)`` returns a model that generates for batches of texts.

    >>> from seq2seq import load
    >>> model = load("runs/attn")                      # device="auto": CUDA when available
    >>> [result] = model.generate(["sort list `l` in reverse"], beam=5, nbest=3)
    >>> result.outputs, result.scores, result.attention[0].shape   # n-best texts, scores, [T, S]

A thin layer over :class:`~seq2seq.translator.Translator` (which the CLI and the
server use too), so every entry point decodes the same way. It only reads the run directory's
own files: the config (YAML), the vocabularies and run metadata (JSON) and the weights
(safetensors); nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import torch

from seq2seq.data.vocab import EOS
from seq2seq.translator import Generation, InputError, Translator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """The outputs for one input, best first: one for greedy search and sampling, ``nbest`` for beam search."""

    source: str
    source_tokens: list[str]
    generations: list[Generation]

    @property
    def text(self) -> str:
        """The best output."""
        return self.generations[0].text

    @property
    def outputs(self) -> list[str]:
        return [generation.text for generation in self.generations]

    @property
    def scores(self) -> list[float]:
        """Log-probabilities divided by the length penalty: the order the outputs come in."""
        return [generation.normalized_score for generation in self.generations]

    @property
    def attention(self) -> list[torch.Tensor | None]:
        """One [T, S] matrix per output (rows labelled by :func:`attention_rows`), None without attention."""
        return [generation.attention for generation in self.generations]


def attention_rows(generation: Generation) -> list[str]:
    """The output tokens that label the rows of ``generation.attention``.

    A finished output also attended when it chose ``<eos>``, and that step counts in its
    score, so the matrix has one row more than the output has tokens.
    """
    return generation.tokens + ([EOS] if generation.finished else [])


@dataclass(frozen=True)
class ModelInfo:
    """What a run directory says about its model: enough to choose among served models."""

    name: str
    architecture: dict[str, Any]  # the run's `model` config section (preset, encoder, decoder); an ensemble's first member's
    parameters: int  # an ensemble: all its members together
    src_vocab_size: int
    tgt_vocab_size: int
    target: Literal["python", "text"]
    max_len: int  # the default output length limit
    device: str
    weights: Literal["float32", "int8"] = "float32"  # int8: dynamically quantized for CPU decoding
    runtime: Literal["torch", "onnx", "ctranslate2"] = "torch"
    training: dict[str, Any] = field(default_factory=dict)  # run.json and the per-epoch records of metrics.jsonl
    evaluations: dict[str, Any] = field(default_factory=dict)  # eval_<split>*.json by file stem
    ensemble: tuple[str, ...] = ()  # an ensemble's run directories, the loaded run first; empty for one model


class Model:
    """A trained model loaded once from a run directory; see :func:`load`."""

    def __init__(self, translator: Translator, *, name: str, quantize: str | None = None, runtime: str = "torch") -> None:
        self.translator = translator
        self.name = name
        self.quantize, self.runtime = quantize, runtime

    @property
    def is_code(self) -> bool:
        return self.translator.is_code

    def generate(
        self,
        texts: Sequence[str],
        *,
        beam: int = 1,
        nbest: int = 1,
        length_penalty: Literal["none", "gnmt", "average"] | None = None,
        alpha: float | None = None,
        constrain: Literal["grammar", "python", "none"] | None = None,
        sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        max_len: int | None = None,
        heads: bool = False,
        no_repeat_ngram_size: int | None = None,
    ) -> list[Result]:
        """One :class:`Result` per text, in order.

        Greedy search by default; ``beam > 1`` keeps ``nbest`` of the beam. ``constrain="grammar"``
        writes only Python that parses, ``"python"`` only balances brackets, None takes the run's
        ``decode.constrain`` (see :meth:`Translator.generate_nbest`); ``sample=True`` draws one output per
        text (``temperature``, ``top_k``, ``top_p``; reproducible with a ``seed``). ``heads=True``: a
        multi-head model's generations also carry each head's weights [k, T, S].
        ``no_repeat_ngram_size``: no n-gram of that size twice in an output (0 = off, None: the run's
        ``decode.no_repeat_ngram_size``). ``length_penalty`` and ``alpha``: how a beam ranks finished
        outputs of different lengths (None: the run's ``decode.length_penalty`` and ``decode.alpha``; through
        CTranslate2, which has no penalty, ``"none"``, and the run's penalty a warning at load). Bad options
        or an empty text raise :class:`~seq2seq.translator.InputError`.
        """
        if isinstance(texts, str):
            # A bare string would otherwise be decoded character by character.
            raise InputError("generate takes a list of texts: write model.generate([text])")
        texts = list(texts)
        found = self.translator.generate_nbest(
            texts, max_len=max_len, beam_size=beam, nbest=nbest, length_penalty=length_penalty, alpha=alpha,
            constrain=constrain, sample=sample, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
            heads=heads, no_repeat_ngram_size=no_repeat_ngram_size,
        )
        return [Result(text, generations[0].source_tokens, generations) for text, generations in zip(texts, found)]

    @cached_property
    def info(self) -> ModelInfo:
        """Read once: a run being trained further does not change what a loaded model is."""
        run = self.translator.run
        return ModelInfo(
            name=self.name,
            architecture=run.config.model.model_dump(mode="json"),
            parameters=run.parameters,
            src_vocab_size=len(run.src_vocab),
            tgt_vocab_size=len(run.tgt_vocab),
            target="python" if self.is_code else "text",
            max_len=run.config.decode.max_len,
            device=str(run.device),
            weights="int8" if self.quantize == "int8" else "float32",
            runtime=self.runtime,
            training=_training_summary(run.run_dir),
            evaluations={path.stem: _read_json(path) for path in sorted(run.run_dir.glob("eval_*.json"))},
            ensemble=tuple(map(str, run.members)),
        )


def load(
    run_dir: str | PathLike[str], *, device: str = "auto", checkpoint: Literal["best", "last", "averaged"] = "best",
    quantize: Literal["int8"] | None = None, runtime: Literal["torch", "onnx", "ctranslate2"] = "torch",
    ensemble: Sequence[str | PathLike[str]] = (),
) -> Model:
    """Load the ``best`` (``last``, ``averaged``) weights of a run directory made by ``seq2seq train``.

    ``ensemble``: more run directories whose models decode together with this one (the mean of
    their distributions; they must share its vocabularies and tokenizers).

    ``device`` is ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
    ``"cuda:N"``. ``quantize="int8"`` decodes with int8 weights (CPU only; about 2x faster, see
    docs/BENCHMARKS.md); ``runtime="onnx"`` decodes with the run's ONNX export (``seq2seq export``)
    through onnxruntime on the CPU, ``runtime="ctranslate2"`` a transformer run with its CTranslate2
    export (``seq2seq export --format ctranslate2``; with ``quantize="int8"`` in CTranslate2's int8;
    greedy and beam search only). A missing or incomplete run directory raises
    :class:`~seq2seq.checkpoint.RunDirError`; an unavailable device or a bad option, ``ValueError``.
    """
    path = Path(run_dir)
    if quantize is not None or runtime != "torch":
        device = "cpu" if device == "auto" else device  # both decode on the CPU only
    translator = Translator.from_run_dir(path, which=checkpoint, device=device, quantize=quantize, runtime=runtime,
                                         ensemble=[Path(other) for other in ensemble])
    return Model(translator, name=path.resolve().name, quantize=quantize, runtime=runtime)


def _read_json(path: Path) -> Any:
    """A metadata file's content, or None when it is unreadable: metadata never stops a model from loading."""
    try:
        return _parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("%s: ignored: %s", path, error)
        return None


def _parse_json(text: str) -> Any:
    """JSON with NaN and Infinity (a diverged run writes them) read as None, which strict JSON can carry."""
    return json.loads(text, parse_constant=lambda _: None)


def _training_summary(run_dir: Path) -> dict[str, Any]:
    """run.json plus the per-epoch records of metrics.jsonl and the best validation loss."""
    summary = dict(_read_json(run_dir / "run.json") or {})
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return summary
    epochs = []
    for number, line in enumerate(metrics.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = _parse_json(line)
        except ValueError:
            logger.warning("%s:%d: malformed JSON line ignored", metrics, number)
            continue
        if isinstance(record, dict) and record.get("kind") == "epoch":
            epochs.append(record)
    summary["epochs"] = epochs
    losses = [record["valid_loss"] for record in epochs if isinstance(record.get("valid_loss"), float)]
    summary["best_valid_loss"] = min(losses, default=None)
    return summary
