"""ONNX export of a Transformer (:mod:`seq2seq.models.transformer`) and its onnxruntime stand-in.

Like the recurrent export (:mod:`seq2seq.models.onnx_export`) it is two graphs, because search
(greedy, beam, sampling, constraints) stays in Python and drives ``decoder.step``:

- ``encoder.onnx``: ``src`` [B, S] and ``src_mask`` [B, S] (True at real tokens) -> ``states``
  [B, S, D] and, per decoder layer i, the cross-attention's ``memory_keys_i`` / ``memory_values_i``
  [B, h, S, d_k], projected once per batch (Vaswani et al. 2017, section 3.2.3). A whole padded
  batch goes through at once: attention masks the padding, so no per-sentence loop is needed.
- ``decoder_step.onnx``: ``prev_tokens`` [B], ``src_mask``, the memory keys/values and, per layer,
  the self-attention cache ``past_keys_i`` / ``past_values_i`` [B, h, t, d_k] -> ``logits`` [B, V],
  the last layer's cross-attention ``weights`` [B, S] and the cache grown by one position,
  ``new_keys_i`` / ``new_values_i`` [B, h, t + 1, d_k]. The position of the new token is t, read
  from the cache's length inside the graph, so one graph serves every step (t = 0 included). A
  copy model's step also takes ``copy_ids`` [B, S] and ``oov`` [X], whose length makes its output
  the V + X extended words' log-probabilities, as the recurrent export's (:mod:`seq2seq.models.onnx_export`).

Letters as in :mod:`seq2seq.models.transformer`: B batch, S source length, t cached target
positions, D d_model, h heads, d_k = D / h, V target vocabulary, L decoder layers.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seq2seq.models.copy import extended_size
from seq2seq.models.onnx_export import MANIFEST, OPSET, register_copy_operators, teacher_forced_steps
from seq2seq.models.transformer import Transformer
from seq2seq.models.transformer_state import TransformerMemory, TransformerState


def _layer_names(prefix: str, layers: int) -> list[str]:
    """["<prefix>keys_0", "<prefix>values_0", ...]: per layer its keys, then its values."""
    return [f"{prefix}{kind}_{i}" for i in range(layers) for kind in ("keys", "values")]


class _EncoderGraph(nn.Module):
    """src [B, S], src_mask [B, S] -> states [B, S, D], then keys_i, values_i [B, h, S, d_k] per layer."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # a copy model's memory wants the source's extended ids: any [B, S] ids pass, since the graph
        # returns only the keys and values (the step graph takes the real ones, copy_ids)
        src_copy = src if self.model.copies else None
        memory = self.model.decoder.prepare_memory(self.model.encoder(src, src_mask), src_mask, src_copy)
        return (memory.states, *(t for pair in zip(memory.keys, memory.values) for t in pair))


class _StepGraph(nn.Module):
    """``TransformerDecoder.step`` with flat tensors, the position taken from the cache's length."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.layers = len(model.decoder.layers)
        self.copies = model.copies

    def forward(self, prev_tokens: torch.Tensor, src_mask: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory_kv, past_kv = caches[: 2 * self.layers], caches[2 * self.layers : 4 * self.layers]
        # the memory's states are not read by a step (the keys and values are), so an empty stand-in
        memory = TransformerMemory(src_mask, src_mask, memory_kv[0::2], memory_kv[1::2])
        if self.copies:  # copy_ids, then oov: the extended width V + X is traced from its length
            copy_ids, oov = caches[4 * self.layers :]
            memory = TransformerMemory(src_mask, src_mask, memory.keys, memory.values, copy_ids,
                                       self.decoder.vocab_size + oov.size(0))
            # a copied word (extended id >= V) is read as <unk>, as TransformerDecoder._embed does
            prev_tokens = prev_tokens.masked_fill(prev_tokens >= self.decoder.vocab_size, self.decoder.unk_index)
        past = TransformerState(past_kv[0::2], past_kv[1::2], 0)
        position = past_kv[0].size(2)  # t: traced as a shape, so the graph computes it per call
        positions = torch.arange(position, position + 1, device=prev_tokens.device)  # [1]
        x = self.decoder.embeddings.embed(prev_tokens.unsqueeze(1), positions)  # [B, 1, D]
        logits, state, weights = self.decoder._layers(x, memory, past=past, self_mask=None)
        return (logits[:, 0], weights[:, 0], *(t for pair in zip(state.keys, state.values) for t in pair))


def export_transformer_onnx(model: Transformer, folder: Path, *, write: Any) -> dict[str, Any]:
    """Write ``encoder.onnx`` and ``decoder_step.onnx`` of ``model`` into ``folder`` through
    ``write(path, callback)`` (an atomic writer); return the manifest (the caller completes it)."""
    model = model.eval().cpu()
    layers = len(model.decoder.layers)
    heads, head_size = model.decoder.heads, model.decoder.head_size
    # tracing examples: B = 2, S = 5, t = 3 (sizes that no other axis shares, so none is fused)
    src = torch.full((2, 5), 4, dtype=torch.long)
    src_mask = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        encoded = _EncoderGraph(model)(src, src_mask)
    past = [torch.zeros(2, heads, 3, head_size) for _ in range(2 * layers)]
    memory_names, past_names = _layer_names("memory_", layers), _layer_names("past_", layers)
    new_names = _layer_names("new_", layers)
    step_inputs = ["prev_tokens", "src_mask", *memory_names, *past_names, *(["copy_ids", "oov"] if model.copies else [])]
    step_outputs = ["logits", "weights", *new_names]
    enc_outputs = ["states", *memory_names]
    enc_axes = {"src": {0: "B", 1: "S"}, "src_mask": {0: "B", 1: "S"}, "states": {0: "B", 1: "S"},
                **{name: {0: "B", 2: "S"} for name in memory_names}}
    step_axes = {"prev_tokens": {0: "B"}, "src_mask": {0: "B", 1: "S"}, "logits": {0: "B"}, "weights": {0: "B", 1: "S"},
                 **{name: {0: "B", 2: "S"} for name in memory_names}, **{name: {0: "B", 2: "t"} for name in past_names},
                 **{name: {0: "B", 2: "t1"} for name in new_names}}
    example = (torch.full((2,), 4, dtype=torch.long), src_mask, *encoded[1:], *past)
    if model.copies:  # three source words outside the vocabulary, ids V to V + 2 (3: a size no other axis has)
        vocab = model.decoder.vocab_size
        example += (torch.tensor([[4, vocab, 5, vocab + 1, vocab + 2]] * 2), torch.zeros(3))
        step_axes |= {"copy_ids": {0: "B", 1: "S"}, "oov": {0: "X"}, "logits": {0: "B", 1: "V_ext"}}
        register_copy_operators()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, as in onnx_export
        write(folder / "encoder.onnx", lambda tmp: torch.onnx.export(
            _EncoderGraph(model).eval(), (src, src_mask), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=["src", "src_mask"], output_names=enc_outputs, dynamic_axes=enc_axes,
        ))
        write(folder / "decoder_step.onnx", lambda tmp: torch.onnx.export(
            _StepGraph(model).eval(), example, str(tmp), dynamo=False, opset_version=OPSET,
            input_names=step_inputs, output_names=step_outputs, dynamic_axes=step_axes,
        ))
    return {
        "opset": OPSET,
        "architecture": "transformer",
        "layers": layers,
        "encoder": {"inputs": ["src", "src_mask"], "outputs": enc_outputs},
        "decoder_step": {"inputs": step_inputs, "outputs": step_outputs},
    }


class _OnnxTransformerDecoder:
    """What the search code reads from ``model.decoder``: ``step`` (and ``copies``)."""

    def __init__(self, session: Any, inputs: list[str], layers: int, max_positions: int | None, vocab_size: int) -> None:
        self.session, self.inputs, self.layers, self.max_positions = session, inputs, layers, max_positions
        self.vocab_size = vocab_size
        self.copies = "copy_ids" in inputs

    def step(
        self, prev_tokens: torch.Tensor, state: TransformerState, memory: TransformerMemory
    ) -> tuple[torch.Tensor, TransformerState, torch.Tensor]:
        """The exported step: logits [B, V], the cache with one more position, weights [B, S]."""
        if self.max_positions is not None and state.position >= self.max_positions:  # as Embeddings.forward says
            raise ValueError(f"position {state.position} is beyond the learned positions: "
                             f"model.transformer.max_positions is {self.max_positions}")
        given = {"prev_tokens": prev_tokens, "src_mask": memory.mask, "copy_ids": memory.copy_ids}
        if self.copies:  # only its length is read: the extended vocabulary's V + X words
            given["oov"] = torch.zeros(memory.extended_size - self.vocab_size)
        for i in range(self.layers):
            given |= {f"memory_keys_{i}": memory.keys[i], f"memory_values_{i}": memory.values[i],
                      f"past_keys_{i}": state.keys[i], f"past_values_{i}": state.values[i]}
        arrays = self.session.run(None, {name: given[name].cpu().contiguous().numpy() for name in self.inputs})
        logits, weights, *cache = (torch.from_numpy(a) for a in arrays)
        return logits, TransformerState(tuple(cache[0::2]), tuple(cache[1::2]), state.position + 1), weights


class OnnxTransformer(nn.Module):
    """A :class:`Transformer` stand-in that runs the exported graphs with onnxruntime (CPU).
    ``reference`` is the torch model whose weights were exported; it describes the model and
    recomputes the last cross-attention's heads on request (:mod:`seq2seq.models.heads`)."""

    runs_on_torch_threads = False  # onnxruntime has its own: decoding runs one batch at a time

    def __init__(self, folder: Path, reference: Transformer, *, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("architecture") != "transformer":
            raise ValueError(f"{folder} holds an export of a {manifest.get('architecture', 'recurrent')} model, "
                             "not of a transformer: export the run again")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.reference = reference
        self.encoder_session = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=providers)
        session = ort.InferenceSession(str(folder / "decoder_step.onnx"), options, providers=providers)
        accepted = {node.name for node in session.get_inputs()}  # the exporter drops inputs a graph never reads
        inputs = [name for name in manifest["decoder_step"]["inputs"] if name in accepted]
        self.heads, self.head_size = reference.decoder.heads, reference.decoder.head_size
        self.decoder = _OnnxTransformerDecoder(  # type: ignore[assignment]
            session, inputs, manifest["layers"], reference.decoder.embeddings.max_positions, reference.decoder.vocab_size)

    @property
    def copies(self) -> bool:
        return self.decoder.copies

    @property
    def max_positions(self) -> int | None:
        return self.reference.max_positions

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor, src_mask: torch.Tensor, *,
               src_copy: torch.Tensor | None = None) -> tuple[TransformerMemory, TransformerState]:
        """src [B, S] -> the memory (states, per-layer keys and values; a copy model's ``src_copy``
        [B, S]) and an empty cache [B, h, 0, d_k]."""
        if (src_copy is not None) != self.copies:
            raise ValueError("a copy Transformer needs src_copy [B, S]" if self.copies else
                             "src_copy was given, but this Transformer has no copy mechanism")
        max_positions = self.reference.encoder.embeddings.max_positions
        if max_positions is not None and src.size(1) > max_positions:
            raise ValueError(f"position {src.size(1) - 1} is beyond the learned positions: "
                             f"model.transformer.max_positions is {max_positions}")
        feeds = {"src": src.cpu().contiguous().numpy(), "src_mask": src_mask.cpu().contiguous().numpy()}
        accepted = {node.name for node in self.encoder_session.get_inputs()}
        states, *kv = (torch.from_numpy(a) for a in self.encoder_session.run(
            None, {name: array for name, array in feeds.items() if name in accepted}))
        memory = TransformerMemory(states, src_mask.cpu(), tuple(kv[0::2]), tuple(kv[1::2]))
        if src_copy is not None:
            memory = TransformerMemory(states, memory.mask, memory.keys, memory.values, src_copy.cpu(),
                                       extended_size(self.decoder.vocab_size, src_copy))
        empty = states.new_zeros(src.size(0), self.heads, 0, self.head_size)  # [B, h, 0, d_k]
        layers = len(memory.keys)
        return memory, TransformerState((empty,) * layers, (empty,) * layers, 0)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, src_mask: torch.Tensor, tgt_input: torch.Tensor,
                *, teacher_forcing: float = 1.0, src_copy: torch.Tensor | None = None):
        """Teacher-forced logits [B, T, V] and attention [B, T, S], one exported step at a time."""
        return teacher_forced_steps(self, src, src_lengths, src_mask, tgt_input, teacher_forcing=teacher_forcing,
                                    src_copy=src_copy)
