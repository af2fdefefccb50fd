"""Scale-out: token-budget batches, gradient accumulation, and the rank sharding they share with
data-parallel training (the torchrun tests themselves are in test_distributed.py)."""

from __future__ import annotations

import pytest
import torch

from seq2seq.data.batching import bucketed_chunks, padded_size, split_chunk
from seq2seq.training.distributed import Ranks, shard_update
from helpers import fit_reverse, tiny_config


def _exact_config(*extra: str):
    """No random draws during training (teacher forcing 1, no dropout): equal updates must give equal weights."""
    return tiny_config("lstm-attention", "train.epochs=2", "train.teacher_forcing=1.0", "train.learning_rate=0.01",
                       "train.early_stopping_patience=100", "train.lr_patience=0", *extra)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Equal up to the order of float sums: after 14 Adam steps the weights differ by about 4e-6
    (another batch order: by about 0.3), since Adam rescales near-zero gradients' rounding."""
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=2e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_split_chunk_and_shards_cover_each_position_once_in_order():
    chunk = list(range(10, 17))  # 7 positions
    assert split_chunk(chunk, 3) == [[10, 11], [12, 13], [14, 15, 16]]
    assert split_chunk([5], 3) == [[], [], [5]]
    shards = [shard_update(chunk, ranks=Ranks(rank=r, world_size=2), accumulate=2) for r in range(2)]
    assert [len(s) for s in shards] == [2, 2]
    assert [i for shard in shards for part in shard for i in part] == chunk


def test_token_batches_fit_the_budget_and_cover_every_pair_once(reverse_data):
    encoded = reverse_data[3]
    chunks = bucketed_chunks(encoded, batch_tokens=60, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(encoded)))
    sizes = [len(chunk) * max(padded_size(encoded[i]) for i in chunk) for chunk in chunks]
    assert max(sizes) <= 60
    assert sum(sizes) / len(sizes) > 45  # filled, not one pair each
    assert len({len(chunk) for chunk in chunks}) > 1  # short pairs: more of them per batch
    with pytest.raises(ValueError, match="exactly one"):
        bucketed_chunks(encoded, batch_size=4, batch_tokens=60, shuffle=False)


def test_accumulating_two_batches_equals_one_batch_twice_the_size(reverse_data, tmp_path):
    doubled, doubled_trainer = fit_reverse(_exact_config("train.batch_size=32"), reverse_data, tmp_path, run_name="b32")
    accumulated, trainer = fit_reverse(_exact_config("train.batch_size=16", "train.accumulate=2"), reverse_data, tmp_path,
                                       run_name="b16x2")
    plain, plain_trainer = fit_reverse(_exact_config("train.batch_size=16"), reverse_data, tmp_path, run_name="b16")
    assert (trainer.step, doubled_trainer.step, plain_trainer.step) == (14, 14, 26)  # 2 epochs of ceil(200 / 32), of 16
    _assert_same_weights(doubled, accumulated)
    with pytest.raises(AssertionError):  # the comparison can tell other updates apart
        _assert_same_weights(doubled, plain)


def test_accumulated_token_batches_equal_one_budget_twice_the_size(reverse_data, tmp_path):
    doubled, doubled_trainer = fit_reverse(_exact_config("train.batch_tokens=240"), reverse_data, tmp_path, run_name="t240")
    accumulated, trainer = fit_reverse(_exact_config("train.batch_tokens=120", "train.accumulate=2"), reverse_data,
                                       tmp_path, run_name="t120x2")
    assert trainer.step == doubled_trainer.step > 0
    _assert_same_weights(doubled, accumulated)


def test_an_update_larger_than_the_data_is_a_clear_error(reverse_data, tmp_path):
    with pytest.raises(ValueError, match=r"train.batch_size 64 x train.accumulate 4 x 1 process\(es\) = 256 pairs per update, "
                                         r"but the training data has 200"):
        fit_reverse(_exact_config("train.batch_size=64", "train.accumulate=4"), reverse_data, tmp_path)
    with pytest.raises(ValueError, match=r"train.batch_tokens 5 is less than the longest training pair \(8 tokens\)"):
        fit_reverse(_exact_config("train.batch_tokens=5", "train.accumulate=2"), reverse_data, tmp_path)
    assert not (tmp_path / "run" / "last.safetensors").exists()
