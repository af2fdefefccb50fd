"""Each head's attention weights of an output, for ``--plot-attention``, the comparison report and
the server: the heads of a recurrent decoder's :class:`~seq2seq.models.multihead.MultiHeadAttention`,
or of a Transformer's last cross-attention (whose mean over the heads is the attention the toolkit
plots and scores). The models keep only that mean while decoding; the heads are recomputed here,
on demand, by a forward hook that lives only during one teacher-forced pass. A run decoded by an
export (ONNX Runtime, CTranslate2) has its heads recomputed by the torch model the export was made
from (its ``reference``: the same weights), over the tokens the export's search chose."""

from __future__ import annotations

import torch
from torch import nn

from seq2seq.models.multihead import MultiHeadAttention
from seq2seq.models.transformer import TransformerAttention, scaled_dot_product


def _torch_model(model: nn.Module) -> nn.Module:
    """``model``, or for an export's stand-in the torch model whose weights it runs (``reference``)."""
    reference = getattr(model, "reference", None)
    return reference if isinstance(reference, nn.Module) else model


def _headed(model: nn.Module) -> nn.Module | None:
    """The attention module whose heads are shown, or None (a model with one attention distribution)."""
    decoder = getattr(_torch_model(model), "decoder", None)
    attention = getattr(decoder, "attention", None)
    if isinstance(attention, MultiHeadAttention):
        return attention
    layers = getattr(decoder, "layers", None)  # a Transformer decoder's ModuleList
    if isinstance(layers, nn.ModuleList) and isinstance(getattr(layers[-1], "cross_attention", None), TransformerAttention):
        return layers[-1].cross_attention
    return None


def has_attention_heads(model: nn.Module) -> bool:
    return _headed(model) is not None


def attention_heads(
    model: nn.Module,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    src_mask: torch.Tensor,
    tgt_input: torch.Tensor,
    *,
    src_copy: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Each head's attention weights [B, k, T, S] while the model reads ``tgt_input`` [B, T] (teacher
    forcing 1.0; for a decoded output ``<sos> y_1 ... y_{T-1}``, exactly the weights its search saw),
    or None for a model without heads.

    A recurrent decoder calls its attention once per step with the query, keys and mask, from which
    :meth:`MultiHeadAttention.head_weights` recomputes the heads [B, k, S]; the Transformer's last
    layer calls its cross-attention once with every position's query [B, T, D], the encoder's keys
    and values [B, k, S, d_k] and the mask, from which eq. 1 gives [B, k, T, S]."""
    attention = _headed(model)
    if attention is None:
        return None
    model = _torch_model(model)
    recorded: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        if isinstance(module, MultiHeadAttention):
            recorded.append(module.head_weights(kwargs["query"], kwargs["keys"], kwargs["mask"],
                                                kwargs.get("coverage")))  # [B, k, S]
            return
        x, keys, values, mask = args[:4]
        query = module._split_heads(module.query_proj(x))  # [B, k, T, d_k]
        recorded.append(scaled_dot_product(query, keys, values, mask, need_weights=True)[1])  # [B, k, T, S]

    handle = attention.register_forward_hook(record, with_kwargs=True)
    training = model.training
    try:
        with torch.inference_mode():
            model.eval()
            model(src, src_lengths, src_mask, tgt_input, teacher_forcing=1.0, src_copy=src_copy)
    finally:
        handle.remove()
        model.train(training)
    if isinstance(attention, MultiHeadAttention):
        return torch.stack(recorded, dim=2)  # one [B, k, S] per step -> [B, k, T, S]
    return recorded[0]  # [B, k, T, S]
