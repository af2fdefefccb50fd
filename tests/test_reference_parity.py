"""The PyTorch modules against the NumPy reference in :mod:`seq2seq.reference`.

Torch runs in float64 here so that any disagreement beyond 1e-8 is a real difference in the
equations, not float32 rounding. Every module is in eval mode, so dropout is off.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seq2seq.config import build_config
from seq2seq.models.bahdanau import BahdanauAttention
from seq2seq.models.build import build_model
from seq2seq.models.encoders import RecurrentEncoder
from seq2seq.reference import bahdanau_attention, decoder_step_reference, gru_cell, lstm_cell, rnn_cell, run_rnn

ATOL = 1e-8
CELLS = ["rnn", "gru", "lstm"]


def numpy_params(module: nn.Module) -> dict[str, np.ndarray]:
    """A module's parameters as float64 NumPy arrays, under PyTorch's names."""
    return {name: p.detach().double().numpy() for name, p in module.named_parameters()}


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len)[None, :] < lengths[:, None]  # [B, S]


def random_tokens(batch: int, length: int, lengths: torch.Tensor, vocab: int) -> torch.Tensor:
    tokens = torch.randint(1, vocab, (batch, length))
    return tokens.masked_fill(~padding_mask(lengths, length), 0)  # [B, S], 0 = <pad>


# --------------------------------------------------------------------------- single cells
@pytest.mark.parametrize("cell", CELLS)
def test_single_cell_matches_reference(cell: str) -> None:
    torch.manual_seed(0)
    torch_cell = {"rnn": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}[cell](5, 7).double()
    x = torch.randn(4, 5, dtype=torch.float64)  # [B, X]
    h, c = torch.randn(2, 4, 7, dtype=torch.float64)  # [B, H] each
    p = numpy_params(torch_cell)
    params = {"w_ih": p["weight_ih"], "w_hh": p["weight_hh"], "b_ih": p["bias_ih"], "b_hh": p["bias_hh"]}
    with torch.no_grad():
        if cell == "lstm":
            h_torch, c_torch = torch_cell(x, (h, c))
            h_ref, c_ref = lstm_cell(x.numpy(), h.numpy(), c.numpy(), **params)
            np.testing.assert_allclose(c_ref, c_torch.numpy(), atol=ATOL)
        else:
            h_torch = torch_cell(x, h)
            h_ref = (rnn_cell if cell == "rnn" else gru_cell)(x.numpy(), h.numpy(), **params)
    np.testing.assert_allclose(h_ref, h_torch.numpy(), atol=ATOL)


@pytest.mark.parametrize("cell", CELLS)
def test_one_step_of_full_rnn_matches_reference_cell(cell: str) -> None:
    """nn.RNN/GRU/LSTM (not the *Cell classes) for one step with a given initial state."""
    torch.manual_seed(1)
    rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell](3, 6, batch_first=True).double()
    x = torch.randn(2, 1, 3, dtype=torch.float64)
    h0, c0 = torch.randn(1, 2, 6, dtype=torch.float64), torch.randn(1, 2, 6, dtype=torch.float64)
    with torch.no_grad():
        _, final = rnn(x, (h0, c0) if cell == "lstm" else h0)
    h_torch = final[0] if cell == "lstm" else final
    _, h_ref, c_ref = run_rnn(
        cell, x.numpy(), np.array([1, 1]), numpy_params(rnn), h0=h0.numpy(), c0=c0.numpy() if cell == "lstm" else None
    )
    np.testing.assert_allclose(h_ref, h_torch.numpy(), atol=ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(c_ref, final[1].numpy(), atol=ATOL)


# --------------------------------------------------------------------------- encoder
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_encoder_matches_reference_with_ragged_lengths(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(2)
    encoder = RecurrentEncoder(
        vocab_size=11, embedding_size=5, hidden_size=6, cell=cell, layers=2, bidirectional=bidirectional, dropout=0.3
    ).double()
    encoder.eval()
    lengths = torch.tensor([4, 7, 1, 5])  # unsorted, with a length-1 sentence
    src = random_tokens(4, 7, lengths, 11)
    with torch.no_grad():
        states, final = encoder(src, lengths)

    params = numpy_params(encoder)
    embedded = params["embedding.weight"][src.numpy()]  # [B, S, E]
    rnn_weights = {name.removeprefix("rnn."): value for name, value in params.items() if name.startswith("rnn.")}
    outputs, h_ref, c_ref = run_rnn(
        cell, embedded, lengths.numpy(), rnn_weights, layers=2, bidirectional=bidirectional
    )
    np.testing.assert_allclose(outputs, states.numpy(), atol=ATOL)
    np.testing.assert_allclose(h_ref, final.hidden.numpy(), atol=ATOL)
    if cell == "lstm":
        np.testing.assert_allclose(c_ref, final.cell.numpy(), atol=ATOL)
    else:
        assert final.cell is None and c_ref is None


# --------------------------------------------------------------------------- attention
def test_split_attention_equals_concatenated_seed_formula() -> None:
    """``W_q h_t + W_k h_s`` in the module equals ``W [h_t; h_s]`` in the reference."""
    torch.manual_seed(3)
    attention = BahdanauAttention(query_size=6, key_size=8, attention_size=5).double()
    query = torch.randn(3, 6, dtype=torch.float64)
    states = torch.randn(3, 4, 8, dtype=torch.float64)
    mask = padding_mask(torch.tensor([4, 2, 1]), 4)
    with torch.no_grad():
        context, weights = attention(query=query, keys=attention.project_keys(states), values=states, mask=mask)

    w = np.concatenate(
        [attention.query_proj.weight.detach().numpy(), attention.key_proj.weight.detach().numpy()], axis=1
    )  # [A, Hq + He]
    v = attention.energy.weight.detach().numpy()[0]  # [A]
    context_ref, weights_ref = bahdanau_attention(query.numpy(), states.numpy(), mask.numpy(), w=w, v=v)
    np.testing.assert_allclose(weights_ref, weights.numpy(), atol=ATOL)
    np.testing.assert_allclose(context_ref, context.numpy(), atol=ATOL)
    assert (weights_ref[~mask.numpy()] == 0).all()
    assert (weights.numpy()[~mask.numpy()] == 0).all()


# --------------------------------------------------------------------------- decoder step
def tiny_model(preset: str, *overrides: str):
    sizes = [
        "model.encoder.embedding_size=5",
        "model.encoder.hidden_size=6",
        "model.decoder.embedding_size=4",
        "model.decoder.hidden_size=7",
        "model.decoder.attention_size=5",
    ]
    config = build_config(preset=preset, overrides=[*sizes, *overrides])
    return build_model(config.model, src_vocab_size=11, tgt_vocab_size=9).double().eval()


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [
        ("lstm-attention", ()),
        ("lstm-attention", ("model.encoder.bidirectional=true", "model.encoder.layers=2", "model.decoder.layers=2")),
        ("gru-attention", ("model.encoder.bidirectional=true",)),
        ("rnn", ()),
        ("lstm", ("model.encoder.layers=2", "model.decoder.layers=2")),
    ],
)
def test_decoder_steps_match_reference(preset: str, overrides: tuple[str, ...]) -> None:
    """Three steps of RecurrentDecoder.step against the NumPy decoder, each carrying its own state."""
    torch.manual_seed(4)
    model = tiny_model(preset, *overrides)
    decoder = model.decoder
    lengths = torch.tensor([3, 6, 2])
    src = random_tokens(3, 6, lengths, 11)
    mask = padding_mask(lengths, 6)
    tokens = torch.randint(1, 9, (3, 3))  # [B, T] gold inputs
    with torch.no_grad():
        memory, state = model.encode(src, lengths, mask)

    params = numpy_params(decoder)
    attention_w = attention_v = None
    if decoder.attention is not None:
        attention_w = np.concatenate(
            [params["attention.query_proj.weight"], params["attention.key_proj.weight"]], axis=1
        )  # [A, H + He]
        attention_v = params["attention.energy.weight"][0]
    reference = dict(
        cell=decoder.cell,
        embedding=params["embedding.weight"],
        rnn_weights={name.removeprefix("rnn."): value for name, value in params.items() if name.startswith("rnn.")},
        output_w=params["output.weight"],
        output_b=params["output.bias"],
        states=memory.states.numpy() if decoder.attention is not None else None,
        mask=mask.numpy(),
        attention_w=attention_w,
        attention_v=attention_v,
    )
    h_ref = state.hidden.numpy()
    c_ref = None if state.cell is None else state.cell.numpy()
    for t in range(tokens.size(1)):
        with torch.no_grad():
            logits, state, weights = decoder.step(tokens[:, t], state, memory)
        logits_ref, h_ref, c_ref, weights_ref = decoder_step_reference(tokens[:, t].numpy(), h_ref, c_ref, **reference)
        np.testing.assert_allclose(logits_ref, logits.numpy(), atol=ATOL)
        np.testing.assert_allclose(h_ref, state.hidden.numpy(), atol=ATOL)
        if c_ref is not None:
            np.testing.assert_allclose(c_ref, state.cell.numpy(), atol=ATOL)
        if weights is None:
            assert weights_ref is None
        else:
            np.testing.assert_allclose(weights_ref, weights.numpy(), atol=ATOL)
