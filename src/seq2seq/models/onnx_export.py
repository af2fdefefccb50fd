"""ONNX export of a trained model (encoder + one decoder step) and a model that decodes with
onnxruntime through the same search code as the PyTorch model.

The export is two graphs, because decoding is a loop driven from Python (greedy, beam search,
sampling, constraints all live in :mod:`seq2seq.decoding`):

- ``encoder.onnx``: one source sentence ``src`` [1, S] -> encoder states [1, S, He], projected
  attention keys [1, S, A] (attentive models) and the decoder's initial ``hidden`` [L, 1, H]
  (and ``cell`` for an LSTM decoder). One sentence at a time: the PyTorch encoder packs padded
  batches so that padding never enters the recurrence, which the exported graph cannot do; with
  a single sentence there is no padding, so the states are the same.
- ``decoder_step.onnx``: ``prev_tokens`` [B], the state (``hidden``, ``cell``, ``feed``, ``coverage`` as the
  model has them) and the memory (``states``, ``keys``, ``mask`` [B, S]) -> ``logits`` [B, V],
  the new state and the attention ``weights`` [B, S]. Batch and source length are dynamic. A copy
  model (See et al. 2017) also takes ``copy_ids`` [B, S] (the source as extended target ids) and
  ``oov`` [X], a tensor whose only use is its length: the batch's source words outside the
  vocabulary, so that its ``logits`` are the log-probabilities over the V + X extended words (a
  width the graph cannot know in advance).

:class:`OnnxSeq2Seq` runs both graphs behind the interface the search code uses
(``encode`` and ``decoder.step`` with :class:`DecoderState` / :class:`Memory` values), so every
decoding strategy works unchanged; the torch model it keeps describes the model (parameter
count) and, for plots of a multi-head attention's heads, recomputes them (:mod:`seq2seq.models.heads`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seq2seq.models.copy import extended_size
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.models.state import DecoderState, Memory

OPSET = 17
MANIFEST = "onnx.json"


class _Encoder(nn.Module):
    """One unpadded sentence -> (states, [keys], hidden, [cell]) as flat tensors."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, ...]:
        encoder = self.model.encoder
        states, final = encoder.rnn(encoder.embedding(src))  # [1, S, D*H]; no padding, so no packing
        state = self.model.bridge(DecoderState.from_rnn_output(final))
        outputs = [states]
        if self.model.decoder.attention is not None:
            outputs.append(self.model.decoder.attention.project_keys(states))  # [1, S, A]
        outputs.append(state.hidden)
        if state.cell is not None:
            outputs.append(state.cell)
        return tuple(outputs)


class _DecoderStep(nn.Module):
    """``decoder.step`` with flat tensor inputs and outputs, in the order of :func:`_step_names`."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.lstm = model.decoder.cell == "lstm"
        self.feeds = model.decoder.input_feeding
        self.covers = model.decoder.coverage
        self.attends = model.decoder.attention is not None
        self.copies = model.copies

    def forward(self, prev_tokens: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = list(tensors)
        hidden = values.pop(0)
        cell = values.pop(0) if self.lstm else None
        feed = values.pop(0) if self.feeds else None
        coverage = values.pop(0) if self.covers else None
        memory = Memory(states=values[0], mask=values[2], keys=values[1]) if self.attends else Memory(
            states=hidden.new_zeros(0), mask=hidden.new_zeros(0, dtype=torch.bool)
        )
        if self.copies:  # the extended width V + X is traced from oov's length: dynamic in the graph
            memory = Memory(memory.states, memory.mask, memory.keys, copy_ids=values[3],
                            extended_size=self.decoder.vocab_size + values[4].size(0))
        logits, state, weights = self.decoder.step(prev_tokens, DecoderState(hidden, cell, feed, coverage), memory)
        outputs = [logits, state.hidden]
        if self.lstm:
            outputs.append(state.cell)
        if self.feeds:
            outputs.append(state.feed)
        if self.covers:
            outputs.append(state.coverage)
        if weights is not None:
            outputs.append(weights)
        return tuple(outputs)


def _step_names(model: Seq2Seq) -> tuple[list[str], list[str]]:
    decoder = model.decoder
    inputs, outputs = ["prev_tokens", "hidden"], ["logits", "new_hidden"]
    if decoder.cell == "lstm":
        inputs.append("cell"), outputs.append("new_cell")
    if decoder.input_feeding:
        inputs.append("feed"), outputs.append("new_feed")
    if decoder.coverage:
        inputs.append("coverage"), outputs.append("new_coverage")
    if decoder.attention is not None:
        inputs += ["states", "keys", "mask"]
        outputs.append("weights")
    if model.copies:
        inputs += ["copy_ids", "oov"]
    return inputs, outputs


def _logaddexp(g: Any, a: Any, b: Any) -> Any:
    """ONNX for ``torch.logaddexp`` (the copy mixture's last operation), which opset 17 lacks:
    m + log(exp(a - m) + exp(b - m)) with m = max(a, b). The copy term is never -inf (it is floored
    at COPY_EPSILON), so m is finite and a generated word's -inf outside the vocabulary gives exp 0."""
    m = g.op("Max", a, b)
    return g.op("Add", m, g.op("Log", g.op("Add", g.op("Exp", g.op("Sub", a, m)), g.op("Exp", g.op("Sub", b, m)))))


def register_copy_operators() -> None:
    """Let the exporter write the copy mixture (:func:`seq2seq.models.copy.copy_mixture`)."""
    torch.onnx.register_custom_op_symbolic("aten::logaddexp", _logaddexp, OPSET)


def export_onnx(model: Seq2Seq, folder: Path, *, write: Any) -> dict[str, Any]:
    """Write ``encoder.onnx`` and ``decoder_step.onnx`` of ``model`` into ``folder`` through
    ``write(path, callback)`` (an atomic writer: ``callback(tmp_path)`` fills the file); return
    the manifest (the caller adds what it knows about the run and writes it last)."""
    model = model.eval().cpu()
    decoder = model.decoder
    src = torch.ones(1, 5, dtype=torch.long)
    with torch.no_grad():
        encoded = _Encoder(model)(src)
    enc_outputs = ["states", *(["keys"] if decoder.attention is not None else []), "hidden",
                   *(["cell"] if decoder.cell == "lstm" else [])]
    hidden = encoded[enc_outputs.index("hidden")].expand(-1, 2, -1).contiguous()  # a batch of 2 for tracing
    step_inputs, step_outputs = _step_names(model)
    example: list[torch.Tensor] = [torch.ones(2, dtype=torch.long), hidden]
    if decoder.cell == "lstm":
        example.append(torch.zeros_like(hidden))
    if decoder.input_feeding:
        example.append(torch.zeros(2, decoder.readout.out_features))
    if decoder.coverage:
        example.append(torch.full((2, 5), 0.25))
    if decoder.attention is not None:
        example += [encoded[0].expand(2, -1, -1).contiguous(), encoded[1].expand(2, -1, -1).contiguous(),
                    torch.ones(2, 5, dtype=torch.bool)]
    if model.copies:  # three source words outside the vocabulary, ids V to V + 2 (3: a size no other axis has)
        vocab = decoder.vocab_size
        example += [torch.tensor([[4, vocab, 5, vocab + 1, vocab + 2]] * 2), torch.zeros(3)]
    batch_axes = {"prev_tokens": 0, "hidden": 1, "cell": 1, "feed": 0, "new_hidden": 1, "new_cell": 1, "new_feed": 0,
                  "logits": 0}
    dynamic = {name: {batch_axes[name]: "B"} for name in step_inputs + step_outputs if name in batch_axes}
    if model.copies:
        dynamic["logits"] = {0: "B", 1: "V_ext"}
    for name, axes in (("states", {0: "B", 1: "S"}), ("keys", {0: "B", 1: "S"}), ("mask", {0: "B", 1: "S"}),
                       ("weights", {0: "B", 1: "S"}), ("coverage", {0: "B", 1: "S"}), ("new_coverage", {0: "B", 1: "S"}),
                       ("copy_ids", {0: "B", 1: "S"}), ("oov", {0: "X"})):
        if name in step_inputs + step_outputs:
            dynamic[name] = axes
    if model.copies:
        register_copy_operators()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter handles the recurrent cells with dynamic axes in about a second;
        # torch marks it deprecated in favour of the dynamo exporter, which takes minutes here.
        warnings.simplefilter("ignore")
        write(folder / "encoder.onnx", lambda tmp: torch.onnx.export(
            _Encoder(model).eval(), (src,), str(tmp), dynamo=False, opset_version=OPSET, input_names=["src"],
            output_names=enc_outputs, dynamic_axes={"src": {1: "S"}, "states": {1: "S"}, "keys": {1: "S"}},
        ))
        write(folder / "decoder_step.onnx", lambda tmp: torch.onnx.export(
            _DecoderStep(model).eval(), tuple(example), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=step_inputs, output_names=step_outputs, dynamic_axes=dynamic,
        ))
    return {
        "opset": OPSET,
        "encoder": {"inputs": ["src"], "outputs": enc_outputs},
        "decoder_step": {"inputs": step_inputs, "outputs": step_outputs},
    }


class _OnnxDecoder:
    """What the search code reads from ``model.decoder``: ``step`` and ``copies``."""

    def __init__(self, session: Any, inputs: list[str], outputs: list[str], feed_size: int | None, vocab_size: int) -> None:
        self.session, self.inputs, self.outputs, self.feed_size = session, inputs, outputs, feed_size
        self.vocab_size = vocab_size
        self.copies = "copy_ids" in inputs

    def step(self, prev_tokens: torch.Tensor, state: DecoderState, memory: Memory):
        """The exported ``decoder.step``: logits [B, V] (a copy model: log-probabilities [B, V_ext]), the
        new state and the weights [B, S] (or None)."""
        feed, coverage = state.feed, state.coverage
        if self.feed_size is not None and feed is None:  # before the first step, as in RecurrentDecoder
            feed = torch.zeros(prev_tokens.size(0), self.feed_size)
        if coverage is None and "coverage" in self.inputs:  # nothing attended yet
            coverage = torch.zeros(memory.mask.shape)
        given = {"prev_tokens": prev_tokens, "hidden": state.hidden, "cell": state.cell, "feed": feed,
                 "coverage": coverage, "states": memory.states, "keys": memory.keys, "mask": memory.mask,
                 "copy_ids": memory.copy_ids}
        if self.copies:  # only its length is read: the extended vocabulary's V + X words
            given["oov"] = torch.zeros(memory.extended_size - self.vocab_size)
        arrays = self.session.run(None, {name: given[name].cpu().contiguous().numpy() for name in self.inputs})
        out = dict(zip(self.outputs, (torch.from_numpy(a) for a in arrays)))
        new_state = DecoderState(out["new_hidden"], out.get("new_cell"), out.get("new_feed"), out.get("new_coverage"))
        return out["logits"], new_state, out.get("weights")


def teacher_forced_steps(
    model, src: torch.Tensor, src_lengths: torch.Tensor, src_mask: torch.Tensor, tgt_input: torch.Tensor,
    *, teacher_forcing: float = 1.0, src_copy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An exported model's teacher-forced logits [B, T, V] and attention [B, T, S] (None without
    attention): ``model.encode`` once, then one exported ``model.decoder.step`` per gold token."""
    if teacher_forcing < 1.0:
        raise ValueError("the ONNX model decodes only: teacher_forcing must be 1.0")
    memory, state = model.encode(src, src_lengths, src_mask, src_copy=src_copy)
    logits, weights = [], []
    for t in range(tgt_input.size(1)):
        step_logits, state, step_weights = model.decoder.step(tgt_input[:, t], state, memory)
        logits.append(step_logits)
        weights.append(step_weights)
    attention = torch.stack(weights, dim=1) if weights[0] is not None else None
    return torch.stack(logits, dim=1), attention


class OnnxSeq2Seq(nn.Module):
    """A :class:`Seq2Seq` stand-in that runs the exported graphs with onnxruntime (CPU).

    ``reference`` is the torch model whose weights were exported; it describes the model
    (parameters) and recomputes a multi-head attention's heads on request (never the search)."""

    runs_on_torch_threads = False  # onnxruntime has its own: decoding runs one batch at a time

    def __init__(self, folder: Path, reference: Seq2Seq, *, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.reference = reference
        self.encoder_session = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=providers)
        self.encoder_outputs = manifest["encoder"]["outputs"]
        step = manifest["decoder_step"]
        feed_size = reference.decoder.readout.out_features if reference.decoder.input_feeding else None
        session = ort.InferenceSession(str(folder / "decoder_step.onnx"), options, providers=providers)
        # the exporter drops an input the step never reads (multi-head attention reads its values from the keys)
        accepted = {node.name for node in session.get_inputs()}
        inputs = [name for name in step["inputs"] if name in accepted]
        self.decoder = _OnnxDecoder(session, inputs, step["outputs"], feed_size,  # type: ignore[assignment]
                                    reference.decoder.vocab_size)

    @property
    def copies(self) -> bool:
        return self.decoder.copies

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor, src_mask: torch.Tensor, *,
               src_copy: torch.Tensor | None = None) -> tuple[Memory, DecoderState]:
        """Encode each sentence alone (no padding inside the graph) and pad the results into a batch;
        a copy model keeps ``src_copy`` [B, S] (the source as extended target ids), as the torch model."""
        if (src_copy is not None) != self.copies:
            raise ValueError("a copy model needs src_copy [B, S]" if self.copies else
                             "src_copy was given, but this model has no copy mechanism")
        rows = []
        for row, length in enumerate(src_lengths.tolist()):
            sentence = src[row : row + 1, :length].cpu().contiguous().numpy()
            rows.append(dict(zip(self.encoder_outputs, self.encoder_session.run(None, {"src": sentence}))))
        width = src.size(1)

        def padded(name: str) -> torch.Tensor:  # [1, s, X] each -> [B, S, X], zeros at padding like the packed encoder
            return torch.from_numpy(np.concatenate(
                [np.pad(r[name], ((0, 0), (0, width - r[name].shape[1]), (0, 0))) for r in rows], axis=0))

        hidden = torch.from_numpy(np.concatenate([r["hidden"] for r in rows], axis=1))  # [L, B, H]
        cell = torch.from_numpy(np.concatenate([r["cell"] for r in rows], axis=1)) if "cell" in rows[0] else None
        keys = padded("keys") if "keys" in rows[0] else None
        memory = Memory(states=padded("states"), mask=src_mask.cpu(), keys=keys)
        if src_copy is not None:
            memory = Memory(memory.states, memory.mask, keys, copy_ids=src_copy.cpu(),
                            extended_size=extended_size(self.decoder.vocab_size, src_copy))
        return memory, DecoderState(hidden, cell)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, src_mask: torch.Tensor, tgt_input: torch.Tensor,
                *, teacher_forcing: float = 1.0, src_copy: torch.Tensor | None = None):
        """Teacher-forced logits [B, T, V] and attention [B, T, S], one exported step at a time
        (what validation loss and step probabilities read)."""
        return teacher_forced_steps(self, src, src_lengths, src_mask, tgt_input, teacher_forcing=teacher_forcing,
                                    src_copy=src_copy)
