"""The one place that reads the model config and builds modules from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from seq2seq.models.attention import AttentionOptions
from seq2seq.models.decoders import RecurrentDecoder
from seq2seq.models.encoders import Bridge, RecurrentEncoder
from seq2seq.models.fast_paths import install_fast_paths
from seq2seq.models.registry import ATTENTIONS
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.models.transformer import Embeddings, Transformer, TransformerDecoder, TransformerEncoder

if TYPE_CHECKING:
    from seq2seq.config import ModelConfig


def build_model(
    config: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int, pad_index: int = 0, unk_index: int = 1
) -> Seq2Seq | Transformer:
    """The model ``config`` describes (``model.architecture`` picks the builder), initialised, with
    the CPU fast paths installed (:mod:`seq2seq.models.fast_paths`)."""
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    model = ARCHITECTURES[config.architecture](
        config, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, pad_index=pad_index, unk_index=unk_index
    )
    if config.init == "uniform":
        init_uniform(model, config.init_range)
    return install_fast_paths(model)


def build_recurrent(
    config: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int, pad_index: int = 0, unk_index: int = 1
) -> Seq2Seq:
    """The RNN / GRU / LSTM encoder-decoder, with the attention ``model.decoder.attention`` names."""
    enc, dec = config.encoder, config.decoder
    encoder = RecurrentEncoder(
        vocab_size=src_vocab_size,
        embedding_size=enc.embedding_size,
        hidden_size=enc.hidden_size,
        cell=enc.cell,
        layers=enc.layers,
        bidirectional=enc.bidirectional,
        dropout=enc.dropout,
        pad_index=pad_index,
    )
    attention = None
    if dec.attention != "none":
        options = AttentionOptions(attention_size=dec.attention_size, heads=dec.attention_heads,
                                   window=dec.attention_window, coverage=dec.coverage)
        attention = ATTENTIONS[dec.attention].from_options(
            query_size=dec.hidden_size, key_size=encoder.output_size, options=options
        )
    decoder = RecurrentDecoder(
        vocab_size=tgt_vocab_size,
        embedding_size=dec.embedding_size,
        hidden_size=dec.hidden_size,
        context_size=encoder.output_size,
        cell=dec.cell,
        layers=dec.layers,
        attention=attention,
        coverage=dec.coverage,
        dropout=dec.dropout,
        copy=dec.copy,
        readout_size=dec.readout_size,
        input_feeding=dec.input_feeding,
        pad_index=pad_index,
        unk_index=unk_index,
    )
    bridge = Bridge(
        encoder_size=enc.hidden_size,
        directions=encoder.directions,
        decoder_size=dec.hidden_size,
        decoder_layers=dec.layers,
        decoder_cell=dec.cell,
    )
    return Seq2Seq(encoder=encoder, bridge=bridge, decoder=decoder)


def build_transformer(
    config: ModelConfig, *, src_vocab_size: int, tgt_vocab_size: int, pad_index: int = 0, unk_index: int = 1
) -> Transformer:
    """Vaswani et al. 2017's encoder-decoder as ``model.transformer`` describes it (the recurrent
    ``model.encoder`` / ``model.decoder`` sections are not read)."""
    tf = config.transformer
    if tf.share_embeddings and src_vocab_size != tgt_vocab_size:
        raise ValueError(
            f"model.transformer.share_embeddings: true needs source and target vocabularies of one size, got "
            f"{src_vocab_size} and {tgt_vocab_size}; set model.transformer.share_embeddings=false"
        )
    sizes = {"d_model": tf.d_model, "heads": tf.heads, "ffn_size": tf.ffn_size, "dropout": tf.dropout,
             "pre_norm": tf.norm == "pre"}
    embedding = {"d_model": tf.d_model, "pad_index": pad_index, "positions": tf.positions,
                 "max_positions": tf.max_positions, "dropout": tf.dropout}
    src_embeddings = Embeddings(vocab_size=src_vocab_size, **embedding)
    tgt_embeddings = Embeddings(vocab_size=tgt_vocab_size, **embedding,
                                tokens=src_embeddings.tokens if tf.share_embeddings else None)
    model = Transformer(
        encoder=TransformerEncoder(embeddings=src_embeddings, layers=tf.encoder_layers, **sizes),
        decoder=TransformerDecoder(embeddings=tgt_embeddings, vocab_size=tgt_vocab_size, layers=tf.decoder_layers,
                                   tie_output=tf.tie_output, pad_index=pad_index, copy=tf.copy, unk_index=unk_index,
                                   **sizes),
    )
    model.reset_parameters()
    return model


# model.architecture -> builder; config validation reads the names. The next family is one entry here.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"recurrent": build_recurrent, "transformer": build_transformer}


def init_uniform(model: nn.Module, bound: float) -> None:
    """Every parameter from U(-bound, bound), as OpenNMT-py's ``param_init`` does, instead of each
    module's PyTorch default (which draws embeddings from N(0, 1), ten times the scale); padding
    embeddings stay zero."""
    for parameter in model.parameters():
        nn.init.uniform_(parameter, -bound, bound)
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
