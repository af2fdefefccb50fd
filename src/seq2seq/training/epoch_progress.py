"""What one epoch has done so far: the sums its record reports, the window since the last step
record, and the place a mid-epoch checkpoint saves (``train.save_every_steps``) so that a resumed
run goes on exactly where it stopped; and what the whole pass measured (:class:`EpochRun`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from seq2seq.config import short_repr


def norm_summary(norms: list[float], *, clip: float) -> dict[str, float]:
    """Mean and largest gradient norm, and the share of them above ``clip`` (empty: no fields)."""
    if not norms:
        return {}
    return {"grad_norm_mean": sum(norms) / len(norms), "grad_norm_max": max(norms),
            "clipped_fraction": sum(g > clip for g in norms) / len(norms)}


@dataclass
class EpochProgress:
    """The epoch's counters after ``updates`` of its updates (the trained ones and the ``skipped``)."""

    updates: int = 0
    skipped: int = 0  # updates skipped for a non-finite loss or gradient
    loss_sum: float = 0.0  # cross-entropy summed over the trained target tokens
    tokens: int = 0
    grad_norms: list[float] = field(default_factory=list)  # before clipping, every optimizer step
    seconds: float = 0.0  # training time of the epoch before the checkpoint (0 for a fresh epoch)
    window_loss: float = 0.0  # the same since the last step record
    window_tokens: int = 0
    window_norms: list[float] = field(default_factory=list)

    def add(self, loss_sum: float, tokens: int, grad_norm: float) -> None:
        """One trained update."""
        self.loss_sum, self.tokens = self.loss_sum + loss_sum, self.tokens + tokens
        self.window_loss, self.window_tokens = self.window_loss + loss_sum, self.window_tokens + tokens
        self.grad_norms.append(grad_norm)
        self.window_norms.append(grad_norm)

    def take_window(self) -> tuple[float, int, list[float]]:
        """The window's mean loss, tokens and gradient norms, and a new window."""
        window = self.window_loss / self.window_tokens, self.window_tokens, self.window_norms
        self.window_loss, self.window_tokens, self.window_norms = 0.0, 0, []
        return window

    def to_partial(self, *, seconds: float) -> dict:
        """The ``partial`` counters of a mid-epoch checkpoint, ``seconds`` into the epoch."""
        return {**asdict(self), "seconds": seconds}

    @classmethod
    def from_partial(cls, partial: object) -> EpochProgress | None:
        """A checkpoint's ``partial`` counters (``None``: saved at an epoch's end), their fields checked."""
        if partial is None:
            return None
        if not isinstance(partial, dict) or set(partial) != set(_KINDS):
            raise ValueError(f"partial: expected the fields {sorted(_KINDS)}")
        for name, kind in _KINDS.items():
            if not isinstance(partial[name], (int, float) if kind is float else kind) or isinstance(partial[name], bool):
                raise ValueError(f"partial.{name}: expected {kind.__name__}, got {short_repr(partial[name])}")
        return cls(**{name: list(value) if isinstance(value, list) else value for name, value in partial.items()})


@dataclass
class EpochRun:
    """What one pass over the training data measured, before validation (what :class:`EpochProgress` adds up)."""

    loss: float  # mean per target token over the trained batches
    tokens: int
    seconds: float
    out_of_time: bool
    out_of_steps: bool  # train.max_steps reached
    fraction: float  # share of the updates done
    skipped: int  # updates skipped for a non-finite loss or gradient
    grad_norms: list[float]  # gradient norm before clipping of every optimizer step


# The type a checkpoint's ``partial`` field must have (an int passes for a float).
_KINDS = {"updates": int, "skipped": int, "loss_sum": float, "tokens": int, "grad_norms": list, "seconds": float,
          "window_loss": float, "window_tokens": int, "window_norms": list}
assert set(_KINDS) == {f.name for f in fields(EpochProgress)}
