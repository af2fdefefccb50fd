"""Connection handling of ``seq2seq serve``: a request must arrive whole and in time.

uvicorn times out a connection only while it is idle *between* requests (keep-alive). A client
that connects and sends nothing, or sends its headers or body a byte at a time ("slowloris"),
would hold its connection, and the server's file descriptors and memory with it, for ever.
:class:`DeadlineH11Protocol` gives every request a deadline: from the moment a connection
opens, or the first byte of a request on a kept-alive connection, the whole request (headers
and body) must be in within ``read_timeout_s``, or the connection is closed. Header size is
bounded by h11 (``h11_max_incomplete_event_size``, answered with 400), body size by the
``BodyLimit`` middleware (413 before the body is read).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

__all__ = ["DeadlineH11Protocol", "raise_open_file_limit"]


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request (``read_timeout_s``)."""

    read_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, seconds: float) -> type[DeadlineH11Protocol]:
        """This protocol with its own ``read_timeout_s`` (uvicorn takes a class, not an instance)."""
        return type(cls.__name__, (cls,), {"read_timeout_s": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._read_deadline is None and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)  # parses through handle_events, which disarms once the request is in

    def handle_events(self) -> None:
        super().handle_events()
        self._disarm_when_read()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request that arrived while the last one was answered, and is still partial.
        state = self.conn.their_state
        if self._read_deadline is None and not self.transport.is_closing() and (
            state is h11.SEND_BODY or (state is h11.IDLE and self.conn.trailing_data[0])
        ):
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._cancel()
        self._read_deadline = self.loop.call_later(self.read_timeout_s, self._timed_out)

    def _cancel(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _disarm_when_read(self) -> None:
        # DONE: the request is complete (its body included); MUST_CLOSE / CLOSED / ERROR: nothing more will be read.
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._cancel()

    def _timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        prefix = "%s:%d - " % tuple(self.client[:2]) if self.client else ""
        logger.info("%sclosing a connection that sent no complete request within %g s", prefix, self.read_timeout_s)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app sees the client gone, as if it had hung up
            self.cycle.message_event.set()
        self.transport.close()


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (each connection holds
    one); returns the limit now in force, or 0 where the platform has no such limit."""
    try:
        import resource
    except ImportError:  # not a Unix system
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # not allowed here: keep the soft limit
            pass
    return soft
