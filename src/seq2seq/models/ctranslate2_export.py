"""A Transformer (:mod:`seq2seq.models.transformer`) as a CTranslate2 model, through CTranslate2's
own Python spec API (``ctranslate2.specs.TransformerSpec``), the way its OpenNMT-py and fairseq
converters fill it (``ctranslate2/converters/opennmt_py.py``):

- each self-attention's ``linear[0]`` is the fused [W^Q; W^K; W^V] (our ``query_proj`` then
  ``key_value_proj``, which already holds [W^K; W^V]), ``linear[1]`` is W^O; a cross-attention has
  ``linear[0]`` = W^Q, ``linear[1]`` = [W^K; W^V], ``linear[2]`` = W^O (Vaswani et al. 2017, 3.2.2);
- each sub-layer's ``layer_norm`` is its residual block's norm, applied before (pre-norm) or after
  (post-norm, section 3.1) the residual as ``TransformerSpec.from_config(pre_norm=...)`` says;
  pre-norm stacks also have a final ``layer_norm``;
- embeddings are scaled by sqrt(d_model) (section 3.4, ``scale_embeddings``) and the position
  table is written out (``position_encodings.encodings`` [P, D]): the learned one, or our
  interleaved sinusoids (section 3.5) for P positions, because CTranslate2's built-in sinusoids
  lay sin and cos out differently;
- LayerNorm's epsilon is PyTorch's 1e-5, and the vocabularies' specials are ours (<unk>, <sos>,
  <eos>), <sos> starting the decoder.

Only the spec is built here; :mod:`seq2seq.export` writes it and its manifest.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from seq2seq.models.transformer import Transformer, TransformerAttention, sinusoids


def _array(tensor: torch.Tensor) -> Any:
    return tensor.detach().cpu().float().numpy().copy()


def _linear(spec: Any, module: nn.Linear) -> None:
    spec.weight = _array(module.weight)  # [out, in], as CTranslate2 stores it
    if module.bias is not None:
        spec.bias = _array(module.bias)


def _fused(spec: Any, *modules: nn.Linear) -> None:
    """One linear spec for several bias-free projections stacked on the output axis."""
    spec.weight = _array(torch.cat([m.weight for m in modules], dim=0))  # [sum(out), in]


def _norm(spec: Any, module: nn.Module) -> None:
    spec.gamma, spec.beta = _array(module.weight), _array(module.bias)


def _self_attention(spec: Any, attention: TransformerAttention, norm: nn.LayerNorm) -> None:
    _fused(spec.linear[0], attention.query_proj, attention.key_value_proj)  # [3D, D]: Q, K, V
    _linear(spec.linear[1], attention.output_proj)
    _norm(spec.layer_norm, norm)


def _ffn(spec: Any, layer: nn.Module) -> None:
    _linear(spec.linear_0, layer.ffn.inner)
    _linear(spec.linear_1, layer.ffn.outer)
    _norm(spec.layer_norm, layer.ffn_block.norm)


def _positions(embeddings: nn.Module, count: int) -> Any:
    """The position table CTranslate2 adds to the scaled embeddings: [P, D]."""
    if embeddings.learned is not None:
        return _array(embeddings.learned.weight)
    return _array(sinusoids(torch.arange(count), embeddings.tokens.embedding_dim))


def transformer_spec(
    model: Transformer, *, src_tokens: list[str], tgt_tokens: list[str], positions: int = 1024
) -> Any:
    """The ``ctranslate2.specs.TransformerSpec`` of ``model`` with its vocabularies registered;
    ``positions``: how many sinusoidal positions to write (learned positions write their own)."""
    from ctranslate2.specs import transformer_spec as ct2

    encoder, decoder = model.encoder, model.decoder
    pre_norm = encoder.layers[0].attention_block.pre_norm
    heads = decoder.heads
    # alignment_heads = every head: CTranslate2's returned attention is then their mean, as ours
    spec = ct2.TransformerSpec.from_config((len(encoder.layers), len(decoder.layers)), heads, pre_norm=pre_norm,
                                           alignment_layer=-1, alignment_heads=heads)
    spec.config.layer_norm_epsilon = encoder.layers[0].attention_block.norm.eps
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = tgt_tokens[1], tgt_tokens[2], tgt_tokens[3]
    spec.config.decoder_start_token = tgt_tokens[2]

    # 1. encoder: embeddings, layers, the pre-norm stack's final norm
    spec.encoder.embeddings[0].weight = _array(encoder.embeddings.tokens.weight)  # [V_src, D]
    spec.encoder.scale_embeddings = True
    spec.encoder.position_encodings.encodings = _positions(encoder.embeddings, positions)
    if pre_norm:
        _norm(spec.encoder.layer_norm, encoder.final_norm)
    for layer_spec, layer in zip(spec.encoder.layer, encoder.layers, strict=True):
        _self_attention(layer_spec.self_attention, layer.self_attention, layer.attention_block.norm)
        _ffn(layer_spec.ffn, layer)

    # 2. decoder: the same, plus the cross-attention and the output layer
    spec.decoder.embeddings.weight = _array(decoder.embeddings.tokens.weight)  # [V, D]
    spec.decoder.scale_embeddings = True
    spec.decoder.position_encodings.encodings = _positions(decoder.embeddings, positions)
    if pre_norm:
        _norm(spec.decoder.layer_norm, decoder.final_norm)
    for layer_spec, layer in zip(spec.decoder.layer, decoder.layers, strict=True):
        _self_attention(layer_spec.self_attention, layer.self_attention, layer.self_block.norm)
        cross = layer.cross_attention
        _linear(layer_spec.attention.linear[0], cross.query_proj)
        _linear(layer_spec.attention.linear[1], cross.key_value_proj)  # [2D, D]: K, V
        _linear(layer_spec.attention.linear[2], cross.output_proj)
        _norm(layer_spec.attention.layer_norm, layer.cross_block.norm)
        _ffn(layer_spec.ffn, layer)
    _linear(spec.decoder.projection, decoder.output)  # [V, D] and its bias [V]

    spec.register_source_vocabulary(list(src_tokens))
    spec.register_target_vocabulary(list(tgt_tokens))
    spec.validate()
    return spec
