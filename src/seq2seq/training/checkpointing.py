"""The trainer's resumable state (optimizer, scheduler, RNG, counters) in one checkpoint file.

Written with the atomic, digest-checked safetensors helpers of :mod:`seq2seq.run_files`:
nothing here pickles; tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from seq2seq.config import short_repr
from seq2seq.run_files import (
    FORMAT_VERSION,
    MODEL_PREFIX,
    RunDirError,
    load_model_tensors,
    model_tensors,
    read_safetensors,
    write_safetensors,
)


# ---------------------------------------------------------------- the trainer's state


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_files(
    tensors: dict[str, torch.Tensor], payload: dict[str, Any], optimizer: torch.optim.Optimizer, path: Path
) -> dict[str, Any]:
    """The optimizer's state dict, after checking each tensor against the parameter it belongs to.

    ``Optimizer.load_state_dict`` checks only the group sizes; a moment tensor of the wrong shape
    would surface as a shape error in the middle of the next training step.
    """
    saved_ids = [param_id for group in payload["param_groups"] for param_id in group["params"]]
    params = [param for group in optimizer.param_groups for param in group["params"]]
    if len(saved_ids) != len(params):
        raise RunDirError(f"{path}: optimizer state for {len(saved_ids)} parameters, the model has {len(params)}")
    shapes = {int(param_id): tuple(param.shape) for param_id, param in zip(saved_ids, params, strict=True)}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            if not param_id.isdigit() or int(param_id) not in shapes:
                raise RunDirError(f"{path}: tensor {key} belongs to no parameter of the optimizer")
            if value.dim() > 0 and tuple(value.shape) != shapes[int(param_id)]:
                raise RunDirError(
                    f"{path}: tensor {key} has shape {tuple(value.shape)}, expected {shapes[int(param_id)]} "
                    "(the shape of its parameter)"
                )
            state.setdefault(int(param_id), {})[name] = value
    for param_id, entries in payload["scalars"].items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": payload["param_groups"]}


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,  # ReduceLROnPlateau or LambdaLR (training.schedules)
    counters: dict[str, Any],
) -> None:
    """Weights, optimizer, scheduler, RNG state and counters in ONE safetensors file.

    One file and one ``os.replace`` means a crash can never leave weights of one epoch
    beside an optimizer state of another. Tensors are stored under ``model.*``,
    ``optimizer.*`` and ``rng.*``; everything else is JSON in the file's metadata.
    """
    tensors = {MODEL_PREFIX + name: t for name, t in model.state_dict().items()}
    optimizer_tensors, optimizer_payload = _optimizer_to_files(optimizer)
    tensors.update(optimizer_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = cuda_state
    payload = {
        "format_version": FORMAT_VERSION,
        "counters": counters,
        "optimizer": optimizer_payload,
        "scheduler": scheduler.state_dict(),
        "rng_python": random.getstate(),
    }
    metadata = {"trainer_state": json.dumps(payload), "epoch": str(counters.get("epoch"))}
    write_safetensors(path, tensors, metadata)


def _trainer_state(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """The JSON payload of a training checkpoint, with its format version checked."""
    if "trainer_state" not in metadata:
        raise RunDirError(f"{path}: holds weights only, not a training checkpoint; it cannot be resumed")
    try:
        payload = json.loads(metadata["trainer_state"])
    except (ValueError, RecursionError) as error:
        raise RunDirError(f"{path}: malformed trainer state in the metadata: {error}") from None
    if not isinstance(payload, dict):
        raise RunDirError(f"{path}: trainer state is a JSON {type(payload).__name__}, expected an object")
    if payload.get("format_version") != FORMAT_VERSION:
        raise RunDirError(
            f"{path}: format_version {short_repr(payload.get('format_version'))}; this seq2seq reads {FORMAT_VERSION}"
        )
    missing = sorted({"counters", "optimizer", "scheduler", "rng_python"} - set(payload))
    if missing:
        raise RunDirError(f"{path}: the trainer state lacks {missing}")
    return payload


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,  # ReduceLROnPlateau or LambdaLR (training.schedules)
) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote; return the counters (epoch, step, ...).

    Every way the file can fail to fit (missing, corrupt, other format version, tensors of
    the wrong shape, a damaged state) is a :class:`RunDirError` naming the file and what is wrong.
    """
    tensors, metadata = read_safetensors(path, what="training checkpoint")
    payload = _trainer_state(path, metadata)
    load_model_tensors(model, model_tensors(tensors), path)
    if "rng.torch" not in tensors:
        raise RunDirError(f"{path}: tensor rng.torch (the random generator state) is missing")
    scheduler_state = payload["scheduler"]
    # load_state_dict copies every entry onto the scheduler object itself: only its own entries may come in.
    if not isinstance(scheduler_state, dict) or not set(scheduler_state) <= set(scheduler.state_dict()):
        raise RunDirError(
            f"{path}: the scheduler state is not a {type(scheduler).__name__} state: expected entries "
            f"{sorted(scheduler.state_dict())}"
        )
    try:
        optimizer.load_state_dict(_optimizer_from_files(tensors, payload["optimizer"], optimizer, path))
        scheduler.load_state_dict(scheduler_state)
        torch.set_rng_state(tensors["rng.torch"])
        version, internal, gauss = payload["rng_python"]
        random.setstate((version, tuple(internal), gauss))
        counters = dict(payload["counters"])
    except RunDirError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise RunDirError(f"{path}: the trainer state does not fit this run ({type(error).__name__}: {error})") from None
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return counters

