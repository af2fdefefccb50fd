"""Checkpoint averaging: the element-wise mean of the weights of the last few epochs.

Averaging the parameters of the final checkpoints of one run smooths out the noise of the
last optimizer steps and usually gains a little quality at no decoding cost (Vaswani et al.
2017, section 6.1, average the last 5 or 20 checkpoints; Junczys-Dowmunt et al. 2016 report
the same for recurrent NMT). The trainer keeps the weights of the last
``train.keep_epoch_checkpoints`` epochs as ``epoch-<k>.safetensors``; :func:`average_run`
writes their mean as ``averaged.safetensors``, which ``--checkpoint averaged`` then loads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from seq2seq.run_files import RunDirError, read_safetensors, write_safetensors

AVERAGED_NAME = "averaged.safetensors"
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.safetensors$")


def epoch_weights_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"epoch-{epoch:03d}.safetensors"


def epoch_checkpoints(run_dir: Path) -> dict[int, Path]:
    """The kept epoch weights of ``run_dir``, by epoch, in epoch order."""
    found = {}
    for path in run_dir.glob("epoch-*.safetensors"):
        match = _EPOCH_FILE.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def average_weights(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the floating-point tensors of ``paths`` (accumulated in float64;
    integer tensors, if any, must be equal in every file and are kept as they are)."""
    if not paths:
        raise ValueError("nothing to average")
    reference, _ = read_safetensors(paths[0])
    sums = {name: t.double() if t.is_floating_point() else t for name, t in reference.items()}
    for path in paths[1:]:
        tensors, _ = read_safetensors(path)
        if set(tensors) != set(reference):
            raise RunDirError(f"{path}: holds other tensors than {paths[0]}; these weights cannot be averaged")
        for name, tensor in tensors.items():
            if tensor.shape != reference[name].shape or tensor.dtype != reference[name].dtype:
                raise RunDirError(
                    f"{path}: tensor {name} is {tuple(tensor.shape)} {tensor.dtype}, "
                    f"{tuple(reference[name].shape)} {reference[name].dtype} in {paths[0]}"
                )
            if tensor.is_floating_point():
                sums[name] += tensor.double()
            elif not torch.equal(tensor, reference[name]):
                raise RunDirError(f"{path}: integer tensor {name} differs from {paths[0]}'s; cannot average it")
    return {
        name: (total / len(paths)).to(reference[name].dtype) if reference[name].is_floating_point() else total
        for name, total in sums.items()
    }


def average_run(run_dir: Path, *, last: int | None = None, epochs: Sequence[int] | None = None) -> tuple[Path, list[int]]:
    """Average the kept epoch weights of ``run_dir`` (the ``last`` N, or the listed ``epochs``; all
    kept ones by default) into ``averaged.safetensors``. Returns the file and the epochs averaged."""
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    kept = epoch_checkpoints(run_dir)
    if not kept:
        raise RunDirError(
            f"{run_dir}: no epoch-<k>.safetensors to average; train with --set train.keep_epoch_checkpoints=5 "
            "(the weights of the last 5 epochs are then kept)"
        )
    if epochs is not None:
        missing = sorted(set(epochs) - set(kept))
        if missing:
            raise RunDirError(f"{run_dir}: no weights kept for epoch(s) {missing}; kept: {sorted(kept)}")
        chosen = sorted(set(epochs))
    else:
        if last is not None and last < 1:
            raise ValueError(f"last={last}; expected at least 1")
        if last is not None and last > len(kept):
            raise RunDirError(f"{run_dir}: asked to average the last {last} epochs, but only {sorted(kept)} are kept")
        chosen = sorted(kept)[-last:] if last else sorted(kept)
    tensors = average_weights([kept[epoch] for epoch in chosen])
    path = run_dir / AVERAGED_NAME
    write_safetensors(path, tensors, {"averaged_epochs": ",".join(map(str, chosen))})
    return path, chosen
