"""Data-parallel training with ``torch.distributed`` under ``torchrun``: who this process is, and
the three collectives the trainer needs (gradients and loss sums, the validation sums, a barrier).

``torchrun`` starts one process per rank with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in the environment; :func:`start_ranks` joins the process
group from them (gloo on a CPU, NCCL on CUDA). Without them (a plain ``seq2seq train``) there is
one rank and nothing here sends a message.

The gradients are averaged by ``DistributedDataParallel`` (:func:`data_parallel`), bucket by bucket
while the backward pass runs. The loss of one update is the sum over every target token of every
rank's batches divided by the update's token count (which every rank knows, see
:func:`shard_update`), so that the update equals the one-process update on the whole global batch:
the trainer multiplies each rank's loss by the world size to turn DDP's mean into that sum, lets
DDP communicate on the last accumulated batch only (``no_sync`` before it), and gives a rank whose
share of a short last update is empty a stand-in batch with weight 0, since DDP needs every rank's
backward pass. The loss and token sums for the logs travel in one small ``all_reduce`` of their own.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from seq2seq.config import TrainConfig
from seq2seq.data.batching import EncodedPair, bucketed_chunks, pair_lengths, split_chunk

logger = logging.getLogger(__name__)


class RankLostError(ConnectionError):
    """A collective failed: another rank died (killed, out of memory) or its node went away. An OSError,
    so the command line reports it in one line; the run directory holds the last completed epoch."""


_PEER_LOST = ("connection", "closed", "peer", "timed out", "timeout", "gloo", "nccl", "broken pipe", "reset by")


def _lost_peer(error: RuntimeError) -> bool:
    """Whether a collective's error says that another rank went away (rather than a bug of this one)."""
    text = str(error).lower()
    return isinstance(error, dist.DistError) or any(word in text for word in _PEER_LOST)


def _lost(error: RuntimeError, what: str) -> RankLostError:
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    return RankLostError(
        f"{what} across the training processes failed ({reason}): another process stopped; completed epochs "
        "are saved, rerun the same torchrun command with --resume RUN"
    )


@contextmanager
def _watching(what: str) -> Iterator[None]:
    """Around communication: an error that says another rank went away becomes a one-line
    :class:`RankLostError`; any other error stays itself."""
    try:
        yield
    except RuntimeError as error:  # torch.distributed.DistError is one; gloo: "Connection closed by peer"
        if not _lost_peer(error):
            raise
        raise _lost(error, what) from None


def _collective(run, what: str):
    with _watching(what):
        return run()


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of one training run (rank 0 of 1: no process group)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks, in place (unchanged with one rank)."""
        if self.distributed:
            _collective(lambda: dist.all_reduce(values, op=dist.ReduceOp.SUM), "summing")
        return values

    def any(self, flag: bool, *, device: torch.device) -> bool:
        """Whether ``flag`` holds on any rank, so that every rank makes the same decision."""
        if not self.distributed:
            return flag
        return bool(self.sum(torch.tensor([float(flag)], device=device)).item() > 0)

    def barrier(self) -> None:
        if self.distributed:
            _collective(dist.barrier, "waiting")

    def watching(self, what: str) -> AbstractContextManager:
        """Around code in which DDP exchanges gradients (a backward pass): a lost peer becomes a
        one-line :class:`RankLostError` there too (one process: nothing to watch)."""
        return _watching(what) if self.distributed else nullcontext()

    def no_sync(self, module: torch.nn.Module, *, sync: bool) -> AbstractContextManager:
        """Around one accumulated batch's forward and backward: DDP's ``no_sync`` unless ``sync``
        (the update's last batch, whose backward pass sends the summed gradients)."""
        if sync or not isinstance(module, DistributedDataParallel):
            return nullcontext()
        return module.no_sync()


SINGLE = Ranks()


def start_ranks(device: torch.device, *, timeout_s: float = 600.0) -> tuple[Ranks, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment, or stay alone.

    Returns the ranks and the device this rank trains on: ``cuda:LOCAL_RANK`` for a CUDA device
    (one GPU per process, NCCL), the given CPU device otherwise (gloo). ``timeout_s`` bounds how
    long a collective waits for a rank that died (torchrun usually stops the others first)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local_rank}: only {torch.cuda.device_count()} CUDA device(s) on this node; "
                             "start at most that many processes per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        atexit.register(dist.destroy_process_group)
    logger.info("rank %d of %d (%s, %s)", rank, world_size, backend, device)
    return Ranks(rank=rank, world_size=world_size), device


def data_parallel(model: torch.nn.Module, *, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` under torchrun (which also gives every rank
    rank 0's weights), the model itself in one process.

    Every parameter of every architecture takes part in every forward pass (each preset is trained
    under two processes in the tests and by hand), so DDP need not search the graph for unused ones
    (``find_unused_parameters=False``, DDP's fast default)."""
    if not ranks.distributed:
        return model
    return _collective(lambda: DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=False,
    ), "sharing the weights")


def launched_rank() -> int:
    """The rank ``torchrun`` gave this process (0 outside torchrun), before any process group exists."""
    return int(os.environ.get("RANK", "0"))


def update_chunks(
    pairs: Sequence[EncodedPair], config: TrainConfig, *, ranks: Ranks, generator: torch.Generator
) -> list[list[int]]:
    """The positions of every update's pairs, over all ranks and accumulated batches: length-bucketed
    batches ``world_size x accumulate`` times the size (or token budget) of one process's batch."""
    parts = ranks.world_size * config.accumulate
    if config.batch_tokens is None:
        return bucketed_chunks(pairs, batch_size=config.batch_size * parts, shuffle=True, generator=generator)
    return bucketed_chunks(pairs, batch_tokens=config.batch_tokens * parts, shuffle=True, generator=generator)


def check_update_fits(pairs: Sequence[EncodedPair], config: TrainConfig, *, ranks: Ranks) -> None:
    """Refuse an update that cannot give every process and accumulation step a share of the data."""
    parts = ranks.world_size * config.accumulate
    shares = f"train.accumulate {config.accumulate} x {ranks.world_size} process(es)"
    if parts > 1 and config.batch_tokens is None and config.batch_size * parts > len(pairs):
        raise ValueError(
            f"train.batch_size {config.batch_size} x {shares} = {config.batch_size * parts} pairs per update, "
            f"but the training data has {len(pairs)}: use fewer processes, a smaller accumulate or batch_size"
        )
    longest = int(np.maximum(*pair_lengths(pairs)).max())  # the largest padded_size
    if config.batch_tokens is not None and parts > 1 and config.batch_tokens < longest:
        raise ValueError(
            f"train.batch_tokens {config.batch_tokens} is less than the longest training pair ({longest} tokens): "
            f"with {shares} every share of an update needs one pair; raise batch_tokens or lower data.max_len"
        )


def shard_update(chunk: Sequence[int], *, ranks: Ranks, accumulate: int) -> list[list[int]]:
    """This rank's micro-batches of one update's global ``chunk``: the chunk is cut into
    ``world_size x accumulate`` contiguous runs, and rank r takes runs r*accumulate ... (r+1)*accumulate - 1.

    Every rank computes the same chunks from the shared seed, so no data moves between ranks; a
    run can be empty (a chunk shorter than the runs), and that rank then adds nothing to the update."""
    runs = split_chunk(chunk, ranks.world_size * accumulate)
    return runs[ranks.rank * accumulate : (ranks.rank + 1) * accumulate]
