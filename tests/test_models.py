"""Behaviour of the seq2seq models: shapes, masks, padding invariance, step == unroll,
teacher forcing, state selection, input checks and gradient flow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seq2seq.config import PRESETS, ConfigError, build_config
from seq2seq.models.build import build_model
from seq2seq.models.seq2seq import Seq2Seq
from seq2seq.models.state import DecoderState, Memory

SRC_VOCAB, TGT_VOCAB = 13, 17
SIZES = [
    "model.encoder.embedding_size=8",
    "model.encoder.hidden_size=12",
    "model.decoder.embedding_size=6",
    "model.decoder.hidden_size=12",
    "model.decoder.attention_size=12",  # divisible by the multi-head presets' 4 heads
]
BIDIRECTIONAL = ("model.encoder.bidirectional=true",)
TWO_LAYERS = ("model.encoder.layers=2", "model.decoder.layers=2")
# Encoder and decoder of different sizes, and a 1-layer decoder on a 2-layer encoder: the bridge maps.
MISMATCHED = ("model.decoder.hidden_size=9", "model.encoder.layers=2", "model.decoder.layers=1")
VARIANTS = {
    "base": (),
    "bi": BIDIRECTIONAL,
    "2layer": TWO_LAYERS,
    "bi-2layer": BIDIRECTIONAL + TWO_LAYERS,
    "mismatched": MISMATCHED,
    "readout": ("model.decoder.readout_size=7",),  # Luong's tanh attentional vector before the output layer
    # Luong's input feeding: attention after the cell, the attentional vector fed to the next step.
    "input-feeding": ("model.decoder.readout_size=7", "model.decoder.input_feeding=true", "model.encoder.bidirectional=true"),
}
NEEDS_ATTENTION = {"input-feeding"}
# Copy presets need src_copy in every call; tests/test_copy.py checks the same properties for them.
# (the Transformer's preset has no recurrent sections: tests/test_transformer.py checks it)
PLAIN_PRESETS = [name for name, preset in PRESETS.items()
                 if preset.get("architecture", "recurrent") == "recurrent" and not preset["decoder"].get("copy")]


def _valid(preset: str, variant: str) -> bool:
    """Whether the combination is a valid config (the dot score refuses a bidirectional encoder's
    wider states, for one); the refusals themselves are tested in test_attention_variants.py."""
    try:
        build_config(preset=preset, overrides=[*SIZES, *VARIANTS[variant]])
    except ConfigError:
        return False
    return True


CASES = [
    pytest.param(preset, variant, id=f"{preset}-{variant}")
    for preset in PLAIN_PRESETS
    for variant in VARIANTS
    if (variant not in NEEDS_ATTENTION or PRESETS[preset]["decoder"]["attention"] != "none") and _valid(preset, variant)
]
ATTENTION_PRESETS = [name for name in PLAIN_PRESETS if PRESETS[name]["decoder"]["attention"] == "bahdanau"]


def make_model(preset: str, variant: str = "base", *, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    config = build_config(preset=preset, overrides=[*SIZES, *VARIANTS[variant]])
    return build_model(config.model, src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB)


def make_batch(lengths: list[int], *, max_len: int | None = None, tgt_len: int = 5, seed: int = 1):
    """A padded batch: src [B, S], src_lengths [B], src_mask [B, S], tgt_input [B, T]."""
    generator = torch.Generator().manual_seed(seed)
    src_lengths = torch.tensor(lengths)
    max_len = max_len or max(lengths)
    src_mask = torch.arange(max_len)[None, :] < src_lengths[:, None]  # [B, S]
    src = torch.randint(1, SRC_VOCAB, (len(lengths), max_len), generator=generator).masked_fill(~src_mask, 0)
    tgt_input = torch.randint(1, TGT_VOCAB, (len(lengths), tgt_len), generator=generator)
    return src, src_lengths, src_mask, tgt_input


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(("preset", "variant"), CASES)
def test_shapes(preset: str, variant: str) -> None:
    model = make_model(preset, variant)
    config = build_config(preset=preset, overrides=[*SIZES, *VARIANTS[variant]]).model
    src, lengths, mask, tgt_input = make_batch([4, 6, 2], tgt_len=5)
    memory, state = model.encode(src, lengths, mask)
    directions = 2 if config.encoder.bidirectional else 1
    assert memory.states.shape == (3, 6, directions * config.encoder.hidden_size)  # [B, S, D*He]
    assert state.hidden.shape == (config.decoder.layers, 3, config.decoder.hidden_size)  # [Ld, B, Hd]
    if config.decoder.cell == "lstm":
        assert state.cell is not None and state.cell.shape == state.hidden.shape
    else:
        assert state.cell is None
    logits, attention = model(src, lengths, mask, tgt_input)
    assert logits.shape == (3, 5, TGT_VOCAB)  # [B, T, V]
    if config.decoder.attention == "bahdanau":
        assert memory.keys is not None and memory.keys.shape == (3, 6, config.decoder.attention_size)
    if config.decoder.attention != "none":
        assert memory.keys is not None and memory.keys.shape[:2] == (3, 6)  # [B, S, ...]: each score's own keys
        assert attention is not None and attention.shape == (3, 5, 6)  # [B, T, S]
    else:
        assert memory.keys is None and attention is None


# --------------------------------------------------------------------------- attention masks
@pytest.mark.parametrize("preset", ATTENTION_PRESETS)
@pytest.mark.parametrize("variant", ["base", "bi-2layer"])
def test_attention_weights_sum_to_one_and_are_zero_on_padding(preset: str, variant: str) -> None:
    model = make_model(preset, variant)
    src, lengths, mask, tgt_input = make_batch([5, 2, 7, 1], max_len=9)  # extra all-padding columns
    for teacher_forcing in (1.0, 0.0):
        _, attention = model(src, lengths, mask, tgt_input, teacher_forcing=teacher_forcing)  # [B, T, S]
        torch.testing.assert_close(attention.sum(-1), torch.ones(4, 5))
        assert (attention.masked_select(~mask[:, None, :]) == 0).all()
        assert (attention.masked_select(mask[:, None, :]) > 0).all()
    memory, state = model.encode(src, lengths, mask)
    _, _, weights = model.decoder.step(tgt_input[:, 0], state, memory)  # [B, S]
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))
    assert (weights[~mask] == 0).all()


# --------------------------------------------------------------------------- padding invariance
@pytest.mark.parametrize(("preset", "variant"), CASES)
def test_padding_invariance(preset: str, variant: str) -> None:
    """An example's logits do not depend on its neighbours or on how much padding it gets."""
    model = make_model(preset, variant).eval()
    src, lengths, mask, tgt_input = make_batch([4, 7, 2], max_len=8, tgt_len=6)
    with torch.no_grad():
        batch_logits, batch_attention = model(src, lengths, mask, tgt_input)
        for i, length in enumerate(lengths.tolist()):
            alone = slice(i, i + 1)
            cut = slice(0, length)
            logits, attention = model(src[alone, cut], lengths[alone], mask[alone, cut], tgt_input[alone])
            torch.testing.assert_close(logits[0], batch_logits[i], atol=1e-5, rtol=0)
            if attention is not None:
                torch.testing.assert_close(attention[0], batch_attention[i, :, cut], atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- step == unroll
def unroll_by_steps(model: Seq2Seq, src, lengths, mask, tgt_input, *, feed_gold: bool):
    """Drive decoder.step by hand; feed the gold token or the previous argmax."""
    memory, state = model.encode(src, lengths, mask)
    prev, all_logits, all_weights = tgt_input[:, 0], [], []
    for t in range(tgt_input.size(1)):
        logits, state, weights = model.decoder.step(prev, state, memory)
        all_logits.append(logits)
        all_weights.append(weights)
        if t + 1 < tgt_input.size(1):
            prev = tgt_input[:, t + 1] if feed_gold else logits.argmax(-1)
    weights = None if all_weights[0] is None else torch.stack(all_weights, dim=1)
    return torch.stack(all_logits, dim=1), weights  # [B, T, V], [B, T, S]


@pytest.mark.parametrize(("preset", "variant"), CASES)
def test_step_by_step_equals_teacher_forced_unroll(preset: str, variant: str) -> None:
    """Covers the no-attention fast path (one cuDNN-style call over the whole target) too."""
    model = make_model(preset, variant).eval()
    batch = make_batch([3, 6, 5], tgt_len=7)
    with torch.no_grad():
        logits, attention = model(*batch, teacher_forcing=1.0)
        stepped_logits, stepped_attention = unroll_by_steps(model, *batch, feed_gold=True)
    torch.testing.assert_close(stepped_logits, logits, atol=1e-5, rtol=0)
    if attention is None:
        assert stepped_attention is None
    else:
        torch.testing.assert_close(stepped_attention, attention, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- teacher forcing
@pytest.mark.parametrize("preset", [p for p in PLAIN_PRESETS if _valid(p, "bi")])
def test_teacher_forcing_zero_feeds_own_argmax(preset: str) -> None:
    model = make_model(preset, "bi").eval()
    batch = make_batch([3, 6, 5], tgt_len=7)
    with torch.no_grad():
        free, _ = model(*batch, teacher_forcing=0.0)
        greedy, _ = unroll_by_steps(model, *batch, feed_gold=False)
        forced, _ = model(*batch, teacher_forcing=1.0)
    torch.testing.assert_close(free, greedy, atol=1e-5, rtol=0)
    # The first step always reads <sos>; later steps read different tokens and so differ.
    torch.testing.assert_close(free[:, 0], forced[:, 0], atol=1e-5, rtol=0)
    assert not torch.allclose(free, forced, atol=1e-3)


@pytest.mark.parametrize("preset", ["gru", "lstm-attention"])
def test_partial_teacher_forcing_is_reproducible_with_a_seed(preset: str) -> None:
    model = make_model(preset).eval()
    batch = make_batch([3, 6, 5], tgt_len=12)
    runs = []
    with torch.no_grad():
        for _ in range(2):
            torch.manual_seed(123)
            runs.append(model(*batch, teacher_forcing=0.5)[0])
        forced, _ = model(*batch, teacher_forcing=1.0)
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)
    assert not torch.allclose(runs[0], forced, atol=1e-3)


# --------------------------------------------------------------------------- input feeding
def test_input_feeding_carries_the_attentional_vector_to_the_next_step() -> None:
    model = make_model("gru-attention", "input-feeding").eval()
    src, lengths, mask, tgt_input = make_batch([3, 6, 5], tgt_len=4)
    with torch.no_grad():
        memory, state = model.encode(src, lengths, mask)
        assert state.feed is None  # zeros before the first step
        _, state, _ = model.decoder.step(tgt_input[:, 0], state, memory)
        assert state.feed is not None and state.feed.shape == (3, 7)  # [B, R]
        assert state.select(torch.tensor([2, 0])).feed.equal(state.feed[[2, 0]])
        logits, _, _ = model.decoder.step(tgt_input[:, 1], state, memory)
        other = type(state)(state.hidden, state.cell, torch.zeros_like(state.feed))
        changed, _, _ = model.decoder.step(tgt_input[:, 1], other, memory)
    assert not torch.allclose(logits, changed, atol=1e-4)  # the fed vector is read


def test_input_feeding_needs_attention_and_its_readout_defaults_to_the_hidden_size() -> None:
    from seq2seq.config import ConfigError

    with pytest.raises(ConfigError, match="input_feeding: true needs attention"):
        build_config(preset="gru-attention", overrides=["model.decoder.input_feeding=true", "model.decoder.readout_size=8",
                                                        "model.decoder.attention=none"])
    config = build_config(preset="gru-attention", overrides=["model.decoder.input_feeding=true", "model.decoder.hidden_size=48"])
    assert config.model.decoder.readout_size == 48


# --------------------------------------------------------------------------- state values
def test_decoder_state_select_reorders_rows() -> None:
    hidden = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)  # [L, B, H]
    state = DecoderState(hidden, hidden + 100)
    index = torch.tensor([2, 0, 0, 1])
    selected = state.select(index)
    assert selected.hidden.shape == (2, 4, 4)
    for row, source in enumerate(index.tolist()):
        assert torch.equal(selected.hidden[:, row], hidden[:, source])
        assert torch.equal(selected.cell[:, row], hidden[:, source] + 100)
    assert torch.equal(selected.top, selected.hidden[-1])
    assert DecoderState(hidden).select(index).cell is None


def test_memory_select_reorders_rows() -> None:
    states = torch.randn(3, 5, 4)  # [B, S, He]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    keys = torch.randn(3, 5, 2)  # [B, S, A]
    index = torch.tensor([1, 2, 1])
    selected = Memory(states, mask, keys).select(index)
    assert torch.equal(selected.states, states[index])
    assert torch.equal(selected.mask, mask[index])
    assert torch.equal(selected.keys, keys[index])
    assert Memory(states, mask).select(index).keys is None


def test_selected_state_and_memory_decode_like_the_original_rows() -> None:
    """What beam search relies on: stepping selected rows equals selecting stepped rows."""
    model = make_model("lstm-attention", "bi").eval()
    src, lengths, mask, tgt_input = make_batch([4, 6, 2])
    index = torch.tensor([2, 2, 0])
    with torch.no_grad():
        memory, state = model.encode(src, lengths, mask)
        logits, new_state, weights = model.decoder.step(tgt_input[:, 0], state, memory)
        logits_sel, new_state_sel, weights_sel = model.decoder.step(
            tgt_input[index, 0], state.select(index), memory.select(index)
        )
    torch.testing.assert_close(logits_sel, logits[index])
    torch.testing.assert_close(weights_sel, weights[index])
    torch.testing.assert_close(new_state_sel.hidden, new_state.hidden[:, index])


# --------------------------------------------------------------------------- input checks
def test_wrong_rank_inputs_raise_with_expected_shape() -> None:
    model = make_model("lstm-attention")
    src, lengths, mask, tgt_input = make_batch([4, 6, 2])
    with pytest.raises(ValueError, match=r"src \[B, S\]"):
        model(src[0], lengths, mask, tgt_input)
    with pytest.raises(ValueError, match=r"lengths \[B\]"):
        model(src, lengths[:, None], mask, tgt_input)
    with pytest.raises(ValueError, match=r"tgt_input \[B, T\]"):
        model(src, lengths, mask, tgt_input[0])
    memory, state = model.encode(src, lengths, mask)
    with pytest.raises(ValueError, match=r"prev_tokens \[B\]"):
        model.decoder.step(tgt_input, state, memory)
    with pytest.raises(ValueError, match=r"query \[B, Hq\]"):
        model.decoder.attention(query=state.hidden, keys=memory.keys, values=memory.states, mask=memory.mask)
    with pytest.raises(ValueError, match=r"mask \[B, S\]"):
        model.decoder.attention(query=state.top, keys=memory.keys, values=memory.states, mask=memory.mask[:, :-1])


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize(("preset", "variant"), [(p, v) for p in PLAIN_PRESETS for v in ("base", "bi-2layer") if _valid(p, v)])
def test_gradients_reach_every_parameter(preset: str, variant: str) -> None:
    model = make_model(preset, variant).train()
    src, lengths, mask, tgt_input = make_batch([4, 6, 2])
    tgt_output = torch.randint(1, TGT_VOCAB, tgt_input.shape)
    logits, _ = model(src, lengths, mask, tgt_input, teacher_forcing=1.0)
    F.cross_entropy(logits.reshape(-1, TGT_VOCAB), tgt_output.reshape(-1)).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    used_rows = src[mask].unique()
    embedding_grad = model.encoder.embedding.weight.grad  # [V, E]
    assert embedding_grad[used_rows].abs().sum(-1).gt(0).all()
    assert embedding_grad[0].abs().sum() == 0  # <pad> row stays fixed


def test_readout_puts_a_tanh_layer_before_the_vocabulary_projection() -> None:
    model = make_model("lstm-attention", "readout")
    decoder = model.decoder
    assert decoder.readout.in_features == 12 + 12 and decoder.readout.out_features == 7
    assert decoder.output.in_features == 7
    features = torch.randn(3, 24)
    expected = decoder.output(torch.tanh(decoder.readout(features)))
    torch.testing.assert_close(decoder._logits(features), expected)
    assert make_model("lstm-attention").decoder.readout is None  # the seed architecture projects directly


def test_uniform_init_draws_every_parameter_within_its_range_and_keeps_padding_zero() -> None:
    torch.manual_seed(0)
    config = build_config(preset="lstm-attention", overrides=[*SIZES, "model.init=uniform", "model.init_range=0.05"])
    model = build_model(config.model, src_vocab_size=30, tgt_vocab_size=20)
    for name, parameter in model.named_parameters():
        assert float(parameter.detach().abs().max()) <= 0.05, name
        assert float(parameter.detach().std()) > 0.02, name  # drawn, not left at zero
    for embedding in (model.encoder.embedding, model.decoder.embedding):
        assert not embedding.weight[0].any()  # <pad>
    # PyTorch's defaults stay the default: embeddings from N(0, 1)
    default = build_model(build_config(preset="lstm-attention", overrides=SIZES).model, src_vocab_size=30, tgt_vocab_size=20)
    assert float(default.decoder.embedding.weight.detach()[1:].std()) > 0.5


def test_dropout_zeroes_about_p_scales_the_rest_and_is_the_identity_in_eval() -> None:
    from seq2seq.models.dropout import Dropout

    torch.manual_seed(0)
    x = torch.randn(64, 50, 40, requires_grad=True)
    dropout = Dropout(0.3)
    torch.manual_seed(1)
    y = dropout(x)
    torch.manual_seed(1)
    assert torch.equal(dropout(x), y)  # torch's generator draws the mask: the seed fixes it
    flat = (y != 0).flatten().float()
    # neighbours are kept independently: P(both) = 0.7^2
    assert abs(float((flat[:-1] * flat[1:]).mean()) - 0.49) < 0.01
    kept = y != 0
    assert abs(float(kept.float().mean()) - 0.7) < 0.01
    assert torch.allclose(y[kept], x[kept] / 0.7)
    y.sum().backward()  # the gradient flows through the kept elements only, scaled alike
    assert torch.allclose(x.grad, kept.float() / 0.7)
    half = dropout(x.detach().bfloat16())
    assert half.dtype == torch.bfloat16 and abs(float((half != 0).float().mean()) - 0.7) < 0.01
    dropout.eval()
    assert dropout(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def _plain_additive_scores(attention, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """v^T tanh(W_q q + k), written out with autograd's own operators."""
    return torch.tanh(attention.query_proj(query).unsqueeze(1) + keys) @ attention.energy.weight.squeeze(0)


def test_additive_score_recomputes_the_tanh_in_backward_with_the_same_gradients() -> None:
    from seq2seq.models.bahdanau import BahdanauAttention
    from seq2seq.models.fast_paths import install_fast_paths
    from seq2seq.models.fast_paths import AdditiveScore

    torch.manual_seed(0)
    q = torch.randn(3, 6, dtype=torch.double, requires_grad=True)
    k = torch.randn(3, 4, 6, dtype=torch.double, requires_grad=True)
    v = torch.randn(1, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(AdditiveScore.apply, (q, k, v))

    attention = install_fast_paths(BahdanauAttention(query_size=5, key_size=7, attention_size=8))
    query, states = torch.randn(4, 5, requires_grad=True), torch.randn(4, 9, 7)
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[1, 6:] = False
    keys = attention.project_keys(states)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        context, weights = attention(query=query, keys=keys, values=states, mask=mask)
    # no [B, S, A] activation is kept for backward, only the keys, which the batch keeps anyway
    assert any(t.data_ptr() == keys.data_ptr() for t in saved)
    assert all(t.data_ptr() == keys.data_ptr() for t in saved if t.shape == (4, 9, 8))
    (context.sum() + (weights * torch.arange(9.0)).sum()).backward()
    ours = [query.grad, *(p.grad for p in attention.parameters())]

    query.grad = None
    attention.zero_grad()
    keys = attention.project_keys(states)
    scores = _plain_additive_scores(attention, query, keys).masked_fill(~mask, float("-inf"))
    plain_weights = torch.softmax(scores, dim=-1)
    plain_context = torch.bmm(plain_weights.unsqueeze(1), states).squeeze(1)
    assert torch.allclose(weights, plain_weights, atol=1e-6) and torch.allclose(context, plain_context, atol=1e-6)
    (plain_context.sum() + (plain_weights * torch.arange(9.0)).sum()).backward()
    for mine, theirs in zip(ours, [query.grad, *(p.grad for p in attention.parameters())]):
        assert torch.allclose(mine, theirs, atol=1e-5)


def test_additive_score_under_bf16_autocast_matches_autograds_own_backward() -> None:
    """Under bf16 autocast the recomputing backward must be as accurate as autograd's tanh backward:
    keys are scaled up so that many units saturate, where 1 - t^2 is most sensitive to rounding."""
    from seq2seq.models.bahdanau import BahdanauAttention
    from seq2seq.models.fast_paths import install_fast_paths

    torch.manual_seed(0)
    attention = install_fast_paths(BahdanauAttention(query_size=5, key_size=7, attention_size=16))
    query, states, mask = torch.randn(6, 5), 3 * torch.randn(6, 11, 7), torch.ones(6, 11, dtype=torch.bool)
    positions = torch.arange(11.0)

    def gradients(plain: bool) -> list[torch.Tensor]:
        attention.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            keys = attention.project_keys(states)
            if plain:
                scores = _plain_additive_scores(attention, query, keys)
                weights = torch.softmax(scores.float(), dim=-1)
                context = torch.bmm(weights.to(states.dtype).unsqueeze(1), states).squeeze(1)
            else:
                context, weights = attention(query=query, keys=keys, values=states, mask=mask)
        (context.float().sum() + (weights.float() * positions).sum()).backward()
        return [parameter.grad.clone() for parameter in attention.parameters()]

    for name, mine, theirs in zip([n for n, _ in attention.named_parameters()], gradients(False), gradients(True)):
        assert mine.dtype == torch.float32 and mine.abs().sum() > 0, name
        assert torch.allclose(mine, theirs, rtol=2e-2, atol=2e-2 * float(theirs.abs().max())), name


def test_additive_score_bf16_key_gradient_is_as_accurate_as_autograds() -> None:
    """Elementwise, against float64 on the same bf16-rounded inputs: the recomputing backward's
    error must not exceed autograd's own bf16 tanh backward's by more than 3 % (computing 1 - t^2
    from a bf16-rounded t^2 was 6 % worse)."""
    from seq2seq.models.fast_paths import AdditiveScore

    torch.manual_seed(0)
    q, k = torch.randn(8, 64).bfloat16(), (3 * torch.randn(8, 30, 64)).bfloat16()  # many saturated units
    v, g = torch.randn(1, 64).bfloat16().float(), torch.randn(8, 30)

    def key_gradient(dtype: torch.dtype, ours: bool) -> torch.Tensor:
        query, keys = q.to(dtype, copy=True).requires_grad_(), k.to(dtype, copy=True).requires_grad_()
        if ours:
            scores = AdditiveScore.apply(query, keys, v.to(dtype) if dtype == torch.float64 else v)
        else:
            scores = torch.tanh(query.unsqueeze(1) + keys) @ v.to(dtype).squeeze(0)
        (scores.to(g.dtype) * g).sum().backward()
        return keys.grad.double()

    exact = key_gradient(torch.float64, ours=False)
    error = {ours: float((key_gradient(torch.bfloat16, ours) - exact).abs().mean()) for ours in (False, True)}
    assert error[True] <= 1.03 * error[False]


def test_cpu_tanh_through_sigmoid_is_within_2e7_of_torch_tanh_and_plain_elsewhere() -> None:
    from seq2seq.models.fast_paths import tanh_

    torch.manual_seed(0)
    x = torch.cat([torch.randn(10_000) * 4, torch.tensor([0.0, 1e-8, -1e-8, 30.0, -30.0, 1e4, -1e4])])
    exact = torch.tanh(x.double())
    ours = tanh_(x.clone())
    assert ours.dtype == torch.float32 and float((ours.double() - exact).abs().max()) <= 2e-7
    assert ours.abs().max() <= 1.0 and ours[-4:].tolist() == [1.0, -1.0, 1.0, -1.0]
    for dtype in (torch.bfloat16, torch.float64):  # sigmoid's rounding near 1/2 would cost bf16 small values
        y = x.to(dtype)
        assert torch.equal(tanh_(y.clone()), torch.tanh(y))
    # where autograd records it (here: the attention's plain path, run through functional_call), torch's own
    leaf = x[:50].clone().requires_grad_()
    (grad,) = torch.autograd.grad(tanh_(leaf * 1.0).sum(), leaf)
    torch.testing.assert_close(grad, 1 - torch.tanh(leaf.detach()) ** 2)
    from seq2seq.models.bahdanau import BahdanauAttention
    from seq2seq.models.fast_paths import install_fast_paths

    attention = install_fast_paths(BahdanauAttention(query_size=5, key_size=7, attention_size=8))
    query, states, mask = torch.randn(2, 5), torch.randn(2, 4, 7), torch.ones(2, 4, dtype=torch.bool)
    parameters = {name: p.detach().clone().requires_grad_() for name, p in attention.named_parameters()}
    context, _ = torch.func.functional_call(
        attention, parameters, (), {"query": query, "keys": states @ parameters["key_proj.weight"].T,
                                   "values": states, "mask": mask}
    )
    context.sum().backward()
    assert all(p.grad is not None for p in parameters.values())


@pytest.mark.parametrize("bias", [True, False])
def test_output_layer_into_padded_rows_equals_nn_linear_with_the_same_gradients(bias: bool, monkeypatch) -> None:
    from torch import nn

    from seq2seq.models import linear as aligned

    calls = []
    original = aligned._AlignedRowsLinear.apply
    monkeypatch.setattr(aligned._AlignedRowsLinear, "apply", lambda *args: calls.append(1) or original(*args))
    torch.manual_seed(0)
    layer = nn.Linear(24, 37, bias=bias)  # 37 columns: padded to 48 while computed
    inputs = torch.randn(16, 9, 24, requires_grad=True)  # 144 rows: at least MIN_ROWS
    ours = aligned.linear(layer, inputs)
    assert len(calls) == 1 and ours.shape == (16, 9, 37) and ours.is_contiguous()
    plain = layer(inputs)
    torch.testing.assert_close(ours, plain)
    grad = torch.randn_like(plain)
    wrt = [inputs, *layer.parameters()]
    for mine, theirs in zip(torch.autograd.grad(ours, wrt, grad), torch.autograd.grad(plain, wrt, grad)):
        torch.testing.assert_close(mine, theirs)
    # a width that is a multiple of 16, fewer rows than MIN_ROWS, autocast, bf16: the layer itself
    aligned.linear(nn.Linear(24, 32), inputs)
    aligned.linear(layer, inputs.reshape(-1, 24)[: aligned.MIN_ROWS - 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert aligned.linear(layer, inputs).dtype == torch.bfloat16
    aligned.linear(layer.to(torch.bfloat16), inputs.bfloat16())
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [
        ("gru-attention", ()),
        ("gru-attention", VARIANTS["input-feeding"]),
        ("lstm-attention", ()),
        ("lstm-attention", VARIANTS["input-feeding"]),
        ("gru-attention", ("model.decoder.cell=rnn",)),
    ],
)
def test_split_cell_unroll_equals_the_nn_module_in_training_with_the_same_gradients(preset, overrides, monkeypatch) -> None:
    """Training's unroll runs the one-layer cell with the embedding half of its input projection
    computed for all gold steps at once; with dropout, and with steps that read the model's own
    prediction, it must give the outputs and gradients of the plain nn module, step by step."""
    from seq2seq.models.split_cell import SplitCell

    torch.manual_seed(0)
    config = build_config(preset=preset, overrides=[*SIZES, *overrides, "model.decoder.dropout=0.3"])
    model = build_model(config.model, src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB).train()
    batch = make_batch([3, 6, 5], tgt_len=9)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(7)  # the same dropout masks and teacher-forcing draws
        logits, _ = model(*batch, teacher_forcing=0.5)
        return logits, list(torch.autograd.grad((logits * logits.detach()).sum(), model.parameters()))

    steps, projected = [], []
    original_call, original_project = SplitCell.__call__, SplitCell.project
    monkeypatch.setattr(SplitCell, "__call__", lambda self, *args: steps.append(1) or original_call(self, *args))
    monkeypatch.setattr(SplitCell, "project", lambda self, e: projected.append(e.dim()) or original_project(self, e))
    split_logits, split_grads = run()
    assert len(steps) == 9  # every step ran the split cell
    assert projected[0] == 3 and 2 in projected  # the gold steps at once, and a step that read its own prediction
    monkeypatch.setattr(SplitCell, "applies", staticmethod(lambda rnn, embedded: False))
    plain_logits, plain_grads = run()
    assert len(steps) == 9
    torch.testing.assert_close(split_logits, plain_logits, atol=1e-5, rtol=0)
    for (name, _), mine, theirs in zip(model.named_parameters(), split_grads, plain_grads):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4, msg=name)


def test_split_cell_applies_to_plain_one_layer_float32_cpu_cells_only() -> None:
    from seq2seq.models.quantize import quantize_for_cpu
    from seq2seq.models.split_cell import SplitCell

    embedded = torch.zeros(2, 3, 4)
    assert SplitCell.applies(make_model("gru-attention").decoder.rnn, embedded)
    assert SplitCell.applies(make_model("lstm-attention", "input-feeding").decoder.rnn, embedded)
    assert not SplitCell.applies(make_model("gru-attention", "2layer").decoder.rnn, embedded)
    assert not SplitCell.applies(quantize_for_cpu(make_model("gru-attention")).decoder.rnn, embedded)
    rnn = make_model("lstm-attention").decoder.rnn
    assert not SplitCell.applies(rnn, embedded.double()) and not SplitCell.applies(rnn, embedded.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not SplitCell.applies(rnn, embedded)
