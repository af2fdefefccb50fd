"""Every attention of the registry against its NumPy reference (values and gradients in float64),
and the behaviour every variant shares: weights on padding are exactly 0, the config refuses what
cannot be built with a one-line reason, beam search reorders the coverage with the hypotheses."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from helpers import tiny_config

from seq2seq.config import ConfigError, build_config
from seq2seq.models.bahdanau import BahdanauAttention
from seq2seq.models.build import build_model
from seq2seq.models.luong import ConcatAttention, DotAttention, GeneralAttention, LocalPAttention
from seq2seq.models.multihead import MultiHeadAttention
from seq2seq.models.registry import ATTENTIONS
from seq2seq.models.state import DecoderState
from seq2seq.reference import (
    additive_coverage_attention,
    local_p_attention,
    luong_attention,
    multi_head_attention,
)

Q, HE, A = 6, 6, 8  # query size, key size (equal: the dot score needs it), attention size
LENGTHS = torch.tensor([5, 3, 1])
MASK = torch.arange(5)[None, :] < LENGTHS[:, None]  # [B, S]


def numpy_of(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: p.detach().numpy() for name, p in module.named_parameters()}


def reference_for(attention: torch.nn.Module) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The NumPy reference of ``attention``, as a function of (query, states, coverage, parameters)."""

    def run(query, states, coverage, p):
        mask = MASK.numpy()
        w_c = p.get("coverage_term.weight")  # [k]: the bilinear scores' coverage term
        w_c1 = None if w_c is None else w_c[0]  # one head
        if isinstance(attention, DotAttention):
            return luong_attention(query, states, mask, score="dot", coverage=coverage, w_c=w_c1)
        if isinstance(attention, GeneralAttention):
            return luong_attention(query, states, mask, score="general", w_a=p["key_proj.weight"],
                                   coverage=coverage, w_c=w_c1)
        if isinstance(attention, LocalPAttention):
            return local_p_attention(query, states, mask, w_a=p["key_proj.weight"], w_p=p["position_proj.weight"],
                                     v_p=p["position_energy.weight"][0], window=attention.window,
                                     coverage=coverage, w_c=w_c1)
        if isinstance(attention, MultiHeadAttention):
            w_k, w_v = np.split(p["key_value_proj.weight"], 2, axis=0)
            return multi_head_attention(query, states, mask, w_q=p["query_proj.weight"], w_k=w_k, w_v=w_v,
                                        w_o=p["output_proj.weight"], heads=attention.heads, coverage=coverage, w_c=w_c)
        w = np.concatenate([p["query_proj.weight"], p["key_proj.weight"]], axis=1)  # W = [W_q | W_k]
        if attention.coverage_proj is None:
            return luong_attention(query, states, mask, score="concat", w_a=w, v_a=p["energy.weight"][0])
        return additive_coverage_attention(query, states, mask, coverage, w=w, w_c=p["coverage_proj.weight"][:, 0],
                                           v=p["energy.weight"][0])

    return run


VARIANTS = {
    "bahdanau+coverage": lambda: BahdanauAttention(query_size=Q, key_size=HE, attention_size=A, coverage=True),
    "luong-dot": lambda: DotAttention(query_size=Q, key_size=HE),
    "luong-general": lambda: GeneralAttention(query_size=Q, key_size=HE),
    "luong-concat": lambda: ConcatAttention(query_size=Q, key_size=HE, attention_size=A),
    "local-p": lambda: LocalPAttention(query_size=Q, key_size=HE, attention_size=A, window=1),
    "multihead": lambda: MultiHeadAttention(query_size=Q, key_size=HE, attention_size=A, heads=2),
    "luong-dot+coverage": lambda: DotAttention(query_size=Q, key_size=HE, coverage=True),
    "luong-general+coverage": lambda: GeneralAttention(query_size=Q, key_size=HE, coverage=True),
    "local-p+coverage": lambda: LocalPAttention(query_size=Q, key_size=HE, attention_size=A, window=1, coverage=True),
    "multihead+coverage": lambda: MultiHeadAttention(query_size=Q, key_size=HE, attention_size=A, heads=2, coverage=True),
}


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(3, Q, dtype=torch.float64, generator=generator)
    states = torch.randn(3, 5, HE, dtype=torch.float64, generator=generator) * MASK[..., None]
    coverage = torch.rand(3, 5, dtype=torch.float64, generator=generator) * MASK
    return query, states, coverage


def objective(context: torch.Tensor | np.ndarray, weights: torch.Tensor | np.ndarray) -> float | torch.Tensor:
    """A scalar that reads every output with a different weight, so that its gradient checks them all."""
    c_weights = np.linspace(-1, 1, context.size if isinstance(context, np.ndarray) else context.numel()).reshape(context.shape)
    w_weights = np.linspace(0.5, 2, weights.size if isinstance(weights, np.ndarray) else weights.numel()).reshape(weights.shape)
    if isinstance(context, np.ndarray):
        return float((context * c_weights).sum() + (weights * w_weights).sum())
    return (context * torch.from_numpy(c_weights)).sum() + (weights * torch.from_numpy(w_weights)).sum()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_attention_matches_its_numpy_reference_in_values_and_gradients(name: str) -> None:
    torch.manual_seed(1)
    attention = VARIANTS[name]().double()
    if attention.coverage_term is not None:  # it starts at 0; the test needs a term that matters
        torch.nn.init.normal_(attention.coverage_term.weight)
    query, states, coverage = (tensor.requires_grad_() for tensor in inputs())
    context, weights = attention(query=query, keys=attention.project_keys(states), values=states, mask=MASK,
                                 coverage=coverage)
    reference = reference_for(attention)
    params = {k: v.copy() for k, v in numpy_of(attention).items()}
    context_ref, weights_ref = reference(query.detach().numpy(), states.detach().numpy(), coverage.detach().numpy(), params)
    np.testing.assert_allclose(weights.detach().numpy(), weights_ref, atol=1e-10)
    np.testing.assert_allclose(context.detach().numpy(), context_ref, atol=1e-10)
    assert (weights.detach().numpy()[~MASK.numpy()] == 0).all()

    # gradients: autograd against central differences of the reference, for the query, the encoder
    # states (through the keys and the values), the coverage vector (a sum of earlier steps' weights
    # in training, so the loss reaches them through it) and every parameter
    objective(context, weights).backward()
    inputs_ = {"query": query, "states": states, "coverage": coverage}
    targets = {label: (tensor.detach().numpy().copy(), np.zeros(tensor.shape) if tensor.grad is None else tensor.grad.numpy())
               for label, tensor in inputs_.items()}  # no gradient: a score that does not read the coverage
    targets.update({k: (params[k], p.grad.numpy()) for k, p in attention.named_parameters()})
    eps = 1e-6
    for label, (array, grad) in targets.items():
        numeric = np.zeros_like(array)
        arrays = {key: targets[key][0] for key in inputs_}  # the unperturbed inputs, but the one being varied
        for index in np.ndindex(array.shape):
            saved = array[index]
            values = []
            for delta in (eps, -eps):
                array[index] = saved + delta
                values.append(objective(*reference(arrays["query"], arrays["states"], arrays["coverage"], params)))
            array[index] = saved
            numeric[index] = (values[0] - values[1]) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, atol=1e-6, err_msg=f"{name}: gradient of {label}")


def test_local_p_attends_only_inside_its_window_around_the_predicted_position() -> None:
    torch.manual_seed(0)
    attention = LocalPAttention(query_size=4, key_size=4, attention_size=4, window=2).double()
    query, states = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 12, 4, dtype=torch.float64)
    mask = torch.arange(12)[None, :] < torch.tensor([12, 7])[:, None]
    _, weights = attention(query=query, keys=attention.project_keys(states), values=states, mask=mask)
    center = attention.position(query, mask)  # [B]
    assert (center >= 0).all() and (center <= mask.sum(-1)).all()
    distance = (torch.arange(12)[None, :] - center[:, None]).abs()
    assert (weights[distance > 2] == 0).all() and (weights[~mask] == 0).all()
    assert ((weights.sum(-1) > 0) & (weights.sum(-1) <= 1 + 1e-12)).all()  # Gaussian after the softmax: at most 1


def test_multihead_weights_are_the_mean_of_the_heads_each_a_distribution() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(query_size=Q, key_size=HE, attention_size=A, heads=4).double()
    query, states, _ = inputs()
    keys = attention.project_keys(states)
    heads = attention.head_weights(query, keys, MASK)  # [B, k, S]
    _, weights = attention(query=query, keys=keys, values=states, mask=MASK)
    assert heads.shape == (3, 4, 5)
    torch.testing.assert_close(heads.sum(-1), torch.ones(3, 4, dtype=torch.float64))
    torch.testing.assert_close(weights, heads.mean(1))


@pytest.mark.parametrize("coverage", [False, True], ids=["", "coverage"])
@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_every_registered_attention_builds_trains_and_decodes_greedy_and_beam(name: str, coverage: bool) -> None:
    extra = ["model.decoder.input_feeding=true", "model.decoder.readout_size=16"] if name != "multihead" else []
    config = tiny_config("lstm-attention", f"model.decoder.attention={name}", *extra,
                         f"model.decoder.coverage={str(coverage).lower()}")
    model = build_model(config.model, src_vocab_size=20, tgt_vocab_size=22)
    src = torch.randint(3, 20, (4, 6))
    lengths = torch.tensor([6, 4, 2, 1])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    logits, attention = model(src, lengths, mask, torch.randint(3, 22, (4, 5)), teacher_forcing=0.5)
    assert logits.shape == (4, 5, 22) and attention.shape == (4, 5, 6)
    assert (attention[~mask[:, None, :].expand_as(attention)] == 0).all()
    logits.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "decoder.attention" in n)
    from seq2seq.decoding.search import decode_sources

    sources = [row[: int(n)].tolist() for row, n in zip(src, lengths)]
    greedy = decode_sources(model.eval(), sources, sos_index=2, eos_index=3, pad_index=0, max_len=7)
    beam = decode_sources(model, sources, sos_index=2, eos_index=3, pad_index=0, max_len=7, beam_size=3, nbest=1)
    for (found,), (best,), n in zip(greedy, beam, lengths.tolist()):
        assert found.attention.shape == (len(found.token_log_probs), n) and math.isfinite(best.score)
        assert best.attention.shape == (len(best.token_log_probs), n)


def test_coverage_is_the_sum_of_past_weights_and_beam_reorders_it_with_the_hypotheses() -> None:
    config = tiny_config("lstm-attention-coverage")
    model = build_model(config.model, src_vocab_size=20, tgt_vocab_size=22).eval()
    src = torch.randint(3, 20, (2, 6))
    lengths = torch.tensor([6, 3])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    with torch.no_grad():
        memory, state = model.encode(src, lengths, mask)
        total = torch.zeros(2, 6)
        for token in (1, 5, 7):
            _, state, weights = model.decoder.step(torch.full((2,), token), state, memory)
            total += weights
        torch.testing.assert_close(state.coverage, total)
        reordered = state.select(torch.tensor([1, 1, 0]))
    assert isinstance(reordered, DecoderState)
    torch.testing.assert_close(reordered.coverage, total[[1, 1, 0]])
    # and the teacher-forced unroll equals stepping: the coverage enters the score the same way in both
    tgt = torch.tensor([[2, 5, 7, 9], [2, 4, 4, 4]])
    with torch.no_grad():
        logits, attention = model(src, lengths, mask, tgt, teacher_forcing=1.0)
        memory, state = model.encode(src, lengths, mask)
        for t in range(4):
            step_logits, state, weights = model.decoder.step(tgt[:, t], state, memory)
            torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=0)
            torch.testing.assert_close(weights, attention[:, t], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.decoder.attention=luong"], "unknown attention 'luong'; valid: none, bahdanau, luong-dot"),
        (["model.decoder.attention=multihead", "model.decoder.attention_heads=3"],
         "model.decoder.attention_heads: 3 heads do not divide attention_size 256; valid head counts"),
        (["model.decoder.attention=luong-dot", "model.encoder.bidirectional=true"],
         r"model.decoder.hidden_size \(256\) to equal the encoder's output size \(512"),
        (["model.decoder.attention=none", "model.decoder.coverage=true"],
         "model.decoder.coverage: true needs an attention whose score reads the coverage"),
        (["model.decoder.attention=local-p", "model.decoder.copy=true"],
         "model.decoder.copy: true needs attention weights that sum to 1"),
        (["model.architecture=conformer"], "unknown architecture 'conformer'; valid: recurrent, transformer"),
    ],
)
def test_bad_attention_settings_name_the_key_and_the_valid_values(
    overrides: list[str], message: str, tmp_path, capsys
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(preset="lstm-attention", overrides=overrides)
    # from the command line: one line, the key and the allowed values, and nothing written
    from seq2seq.cli import main

    sets = [item for override in overrides for item in ("--set", override)]
    capsys.readouterr()
    assert main(["train", "--preset", "lstm-attention", *sets, "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error), error
    assert "Traceback" not in error and "{" not in error
    assert not (tmp_path / "run").exists()


def test_every_preset_builds() -> None:
    from seq2seq.config import PRESETS

    for name in PRESETS:
        config = build_config(preset=name)
        build_model(config.model, src_vocab_size=30, tgt_vocab_size=30)


def test_repetition_and_unattended_rates_on_hand_made_outputs() -> None:
    from seq2seq.evaluation.metrics import repeats_ngram, repetition_rate, unattended_rate

    assert repeats_ngram("a b a b".split(), "a b c".split())  # "a b" twice, the reference once
    assert not repeats_ngram("a b a b".split(), "a b x a b".split())  # the reference repeats it too
    assert not repeats_ngram("a a b".split(), "a b".split())  # unigrams do not count
    assert repeats_ngram("x y z x y z".split(), "x y z".split())
    assert repetition_rate(["a b a b".split(), "c d".split()], ["a b".split(), "c d".split()]) == 0.5
    # three source tokens: the first attended (0.9), the second never above 0.1, the third at 0.5 once
    attention = [[[0.9, 0.05, 0.05], [0.45, 0.05, 0.5]]]
    assert unattended_rate(attention) == pytest.approx(1 / 3)
    assert unattended_rate([[[1.0]], [[0.05, 0.95]]]) == pytest.approx(1 / 3)


def test_coverage_loss_is_zero_for_disjoint_steps_and_counts_repeated_attention() -> None:
    from seq2seq.training.loss import coverage_loss

    disjoint = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [B=1, T=2, S=2]
    repeated = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]]])
    assert float(coverage_loss(disjoint, torch.ones(1, 2, dtype=torch.bool))) == 0.0
    # step 2: min(1, 1) = 1; step 3: min(0.5, 2) + min(0.5, 0) = 0.5
    assert float(coverage_loss(repeated, torch.ones(1, 3, dtype=torch.bool))) == pytest.approx(1.5)
    assert float(coverage_loss(repeated, torch.tensor([[True, True, False]]))) == pytest.approx(1.0)  # padding step


@pytest.mark.parametrize(("preset", "extra", "weight"), [
    ("lstm-attention-coverage", (), 0.1),  # the default for a coverage model (See et al.'s 1.0 cost quality here)
    ("lstm-attention-coverage", ("train.coverage_weight=1.0",), 1.0),
    ("lstm-attention", (), 0.0),
    ("lstm-attention", ("train.coverage_weight=0.5",), 0.5),  # the loss over plain attention, if asked for
])
def test_the_coverage_loss_weight_defaults_to_a_tenth_for_a_coverage_model(preset, extra, weight) -> None:
    from seq2seq.training.trainer import Trainer

    config = tiny_config(preset, *extra)
    model = build_model(config.model, src_vocab_size=12, tgt_vocab_size=10)
    assert Trainer(model=model, config=config.train, pad_index=0, device=torch.device("cpu")).coverage_weight == weight


def test_a_saved_run_keeps_the_coverage_weight_it_trained_with(tmp_path) -> None:
    import json

    from seq2seq.checkpoint import FORMAT_VERSION, RUN_MARKER, load_run_config
    from seq2seq.config import config_to_yaml

    (tmp_path / RUN_MARKER).write_text(json.dumps({"format_version": FORMAT_VERSION}))
    saved = config_to_yaml(tiny_config("lstm-attention-coverage"))
    assert "coverage_weight: 0.1" in saved  # the config says which weight it trains with, not null
    (tmp_path / "config.yaml").write_text(saved)
    assert load_run_config(tmp_path).train.coverage_weight == 0.1
    # saved before commit 210de7c, null meant See et al.'s 1.0 for a coverage model: resumed, it keeps 1.0
    (tmp_path / "config.yaml").write_text(saved.replace("coverage_weight: 0.1", "coverage_weight: null"))
    assert load_run_config(tmp_path).train.coverage_weight == 1.0
    plain = config_to_yaml(tiny_config("lstm-attention")).replace("coverage_weight: 0.0", "coverage_weight: null")
    (tmp_path / "config.yaml").write_text(plain)
    assert load_run_config(tmp_path).train.coverage_weight == 0.0


@pytest.mark.parametrize(("schedule", "expected"), [
    ({"schedule": "constant"}, [0.5, 0.5, 0.5]),
    ({"schedule": "linear", "steps": 100}, [1.0, 0.5, 0.0]),
    ({"schedule": "linear", "steps": 100, "end": 0.25}, [1.0, 0.625, 0.25]),
    ({"schedule": "exponential", "rate": 0.99}, [1.0, 0.99**50, 0.99**100]),
    ({"schedule": "inverse_sigmoid", "k": 10}, [10 / 11, 10 / (10 + np.exp(5)), 10 / (10 + np.exp(10))]),
])
def test_teacher_forcing_schedules_follow_bengio_et_al(schedule: dict, expected: list[float]) -> None:
    config = build_config(base={"train": {"teacher_forcing": schedule}})
    got = [config.train.teacher_forcing.probability(step) for step in (0, 50, 100)]
    assert got == pytest.approx(expected)
    assert build_config(overrides=["train.teacher_forcing=0.8"]).train.teacher_forcing.probability(10**6) == 0.8


def test_the_trainer_draws_teacher_forcing_from_the_schedule_per_optimizer_step(tmp_path, monkeypatch) -> None:
    from helpers import train_tiny_run

    from seq2seq.training.trainer import Trainer

    seen: list[float] = []
    original = Trainer._loss
    monkeypatch.setattr(Trainer, "_loss", lambda self, batch, *, teacher_forcing: seen.append(teacher_forcing)
                        or original(self, batch, teacher_forcing=teacher_forcing))
    run = train_tiny_run(tmp_path / "run", "train.teacher_forcing.schedule=linear", "train.teacher_forcing.steps=4",
                         "model.decoder.coverage=true", "train.batch_size=16")
    assert seen[:6] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])  # 120 pairs / 16: 8 steps
    config_text = (run / "config.yaml").read_text()
    assert "schedule: linear" in config_text and "coverage: true" in config_text


def test_every_model_kind_offers_the_interface_the_search_code_relies_on() -> None:
    from seq2seq.models.ensemble import Ensemble
    from seq2seq.models.interface import EncoderDecoder, Selectable, StepDecoder

    models = [build_model(tiny_config(preset).model, src_vocab_size=20, tgt_vocab_size=22).eval()
              for preset in ("lstm", "lstm-multihead", "lstm-attention-coverage")]
    for model in [*models, Ensemble(models)]:
        assert isinstance(model, EncoderDecoder) and isinstance(model.decoder, StepDecoder)
        src, lengths = torch.randint(3, 20, (2, 4)), torch.tensor([4, 2])
        memory, state = model.encode(src, lengths, torch.arange(4)[None, :] < lengths[:, None])
        assert isinstance(memory, Selectable) and isinstance(state, Selectable)


def test_local_p_predicts_its_position_in_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    attention = LocalPAttention(query_size=8, key_size=8, attention_size=8, window=10)
    query, states = torch.randn(2, 8), torch.randn(2, 301, 8)
    mask = torch.ones(2, 301, dtype=torch.bool)
    exact = attention.position(query, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = attention.position(query.bfloat16(), mask)
        _, weights = attention(query=query, keys=attention.project_keys(states), values=states, mask=mask)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, exact, atol=0.5, rtol=0)  # bf16 arithmetic was off by more than a position
    assert (weights[(torch.arange(301)[None, :] - exact[:, None]).abs() > 10] == 0).all()


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("lstm", ["model.decoder.copy=true"], "model.decoder.copy: true needs attention"),
        ("transformer", ["model.decoder.copy=true"], "model.decoder.copy is the recurrent decoder.s key"),
        ("transformer", ["model.decoder.coverage=true"], "model.decoder.coverage: the Transformer has no coverage"),
        ("lstm", ["train.coverage_weight=1"], "train.coverage_weight: 1.0 needs a recurrent decoder with attention"),
        ("transformer", ["train.coverage_weight=0.5"], "train.coverage_weight: 0.5 needs a recurrent decoder"),
        ("lstm-luong-dot", ["model.encoder.bidirectional=true"], "model.decoder.attention: luong-dot: the dot score"),
    ],
)
def test_settings_a_model_cannot_use_are_refused_at_load_naming_the_key(preset: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(preset=preset, overrides=overrides)


def test_coverage_is_a_constant_for_gradients_in_the_state_and_in_the_loss() -> None:
    """Backpropagating through every earlier step's weights made training diverge (docs/RESULTS.md):
    the coverage vector is detached in the decoder state and in the coverage loss."""
    from seq2seq.training.loss import coverage_loss

    attention = torch.tensor([[[0.7, 0.3], [0.6, 0.4], [0.5, 0.5]]], requires_grad=True)
    coverage_loss(attention, torch.ones(1, 3, dtype=torch.bool)).backward()
    assert attention.grad[0, 0].abs().sum() == 0  # the first step covers nothing: no later step pushes it
    assert attention.grad[0, 1:].abs().sum() > 0
    model = build_model(tiny_config("lstm-attention-coverage").model, src_vocab_size=20, tgt_vocab_size=22).train()
    src, lengths = torch.randint(3, 20, (2, 5)), torch.tensor([5, 3])
    memory, state = model.encode(src, lengths, torch.arange(5)[None, :] < lengths[:, None])
    _, state, weights = model.decoder.step(torch.tensor([2, 2]), state, memory)
    assert weights.requires_grad and not state.coverage.requires_grad


@pytest.mark.parametrize("input_feeding", [False, True], ids=["bahdanau-order", "luong-order"])
def test_luong_concat_is_bahdanaus_score_so_in_one_decoder_order_they_are_one_model(input_feeding: bool) -> None:
    """Luong's concat and Bahdanau's additive score are one expression with the same parameters; what
    differs between the papers is the query (the current state with input feeding, the previous one
    without). So with the same decoder and seed the two names build the same model: the Multi30k
    recipe (input feeding) trained with either is the same run."""
    def logits(attention: str) -> torch.Tensor:
        torch.manual_seed(3)
        config = tiny_config("lstm-attention", f"model.decoder.attention={attention}",
                             f"model.decoder.input_feeding={str(input_feeding).lower()}", "model.decoder.readout_size=16")
        model = build_model(config.model, src_vocab_size=20, tgt_vocab_size=22).eval()
        torch.manual_seed(4)
        src, tgt = torch.randint(3, 20, (3, 6)), torch.randint(3, 22, (3, 5))
        lengths = torch.tensor([6, 4, 2])
        mask = torch.arange(6)[None, :] < lengths[:, None]
        return model(src, lengths, mask, tgt, teacher_forcing=1.0)[0]

    assert torch.equal(logits("luong-concat"), logits("bahdanau"))
    assert not torch.equal(logits("luong-general"), logits("bahdanau"))  # a different score is a different model
