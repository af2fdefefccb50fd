"""Helpers shared by the tests (imported as ``helpers``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seq2seq.config import build_config

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_data(name: str) -> Path:
    """The real data set folder, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not found: real data sets live in ../shared/data beside the repo")
    return path


def tiny_config(preset: str = "lstm-attention", *extra: str):
    return build_config(
        preset=preset,
        overrides=[
            "model.encoder.embedding_size=16",
            "model.encoder.hidden_size=32",
            "model.decoder.embedding_size=16",
            "model.decoder.hidden_size=32",
            "model.decoder.attention_size=32",
            "model.encoder.dropout=0.0",
            "model.decoder.dropout=0.0",
            *extra,
        ],
    )


def fit_reverse(config, reverse_data, tmp_path: Path, *, run_name: str = "run", resume: bool = False):
    """Train ``config``'s model with the Trainer on the first 200 pairs of the ``reverse_data`` fixture
    (validation: the rest), in ``tmp_path / run_name``, optionally resuming what is there."""
    import torch

    from seq2seq.models.build import build_model
    from seq2seq.training.trainer import Trainer

    src_vocab, tgt_vocab, _, encoded = reverse_data
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab))
    run_dir = tmp_path / run_name
    run_dir.mkdir(exist_ok=True)
    trainer = Trainer(model=model, config=config.train, pad_index=0, device=torch.device("cpu"), run_dir=run_dir)
    if resume:
        trainer.resume()
    trainer.fit(encoded[:200], encoded[200:])
    return model, trainer


def train_tiny_run(run_dir: Path, *extra: str) -> Path:
    """Train a tiny attention model for one epoch on 120 built-in pairs (a few seconds) into ``run_dir``.

    One torch thread: on a busy 2-core machine a second one makes this tiny model several times
    slower. Training sets the thread count for the whole process, so it is restored afterwards.
    """
    config = tiny_config("lstm-attention", "data.builtin_train_size=120", "train.epochs=1", "train.batch_size=16",
                         "train.device=cpu", "train.threads=1", *extra)
    return train_keeping_threads(config, run_dir)


def train_keeping_threads(config, run_dir: Path) -> Path:
    """``seq2seq.pipeline.train`` into ``run_dir``, then torch's thread count as it was: training sets
    it for the whole process, and a module-scoped fixture runs outside conftest's per-test restore."""
    import torch

    from seq2seq.pipeline import train

    threads = torch.get_num_threads()
    try:
        train(config, run_dir)
    finally:
        torch.set_num_threads(threads)
    return run_dir


def brackets_balance(tokens: list[str]) -> bool:
    """Whether every (, [ and { in the tokens closes, in order."""
    closer_of, stack = {"(": ")", "[": "]", "{": "}"}, []
    for token in tokens:
        if token in closer_of:
            stack.append(closer_of[token])
        elif token in closer_of.values() and (not stack or stack.pop() != token):
            return False
    return not stack
