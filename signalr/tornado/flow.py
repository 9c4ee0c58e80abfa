"""Flow control for one connection's socket: outgoing, a byte limit and a stall timeout; incoming,
a liveness check for a socket that is deliberately not being read.

No write of ours waits for the client (a broadcast must not wait for its slowest recipient), so
what the kernel does not take at once queues up in Tornado's stream. A client that stops reading
would make that queue grow without bound; :class:`WriteGuard` ends the connection instead, either
when more than ``limit`` bytes from earlier writes are still unsent, or when nothing queued has
left for ``timeout`` seconds (ASP.NET's ``TransportSendTimeout``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from tornado.iostream import IOStream

#: Linux TCP states (the first byte of ``struct tcp_info``).
TCP_ESTABLISHED = 1
TCP_FIN_WAIT1 = 4
TCP_FIN_WAIT2 = 5


def tcp_state(sock: socket.socket | None) -> int | None:
    """The kernel's TCP state of ``sock``, or ``None`` where it does not tell (no ``TCP_INFO``, not a
    TCP socket, already closed)."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return None


def peer_gone(sock: socket.socket | None) -> bool:
    """Whether the peer of ``sock`` has closed or reset the connection, even with unread bytes
    still queued (a socket that is not read reports neither). False where the kernel does not tell:
    the next read or write then finds out."""
    if sock is None:
        return True
    state = tcp_state(sock)
    # A FIN (CLOSE_WAIT) or a reset (CLOSE): either way the client will not read what we would send.
    return state is not None and state != TCP_ESTABLISHED


class WriteGuard:
    """Watches the unsent bytes of ``stream``; calls ``on_overflow`` or ``on_stall`` once, at most.

    The writer calls :meth:`backed_up` only for a write whose future is still pending: a write the
    kernel took whole resolves its future at once, so a client that keeps up costs nothing here.
    """

    __slots__ = ("_stream", "_limit", "_timeout", "_on_overflow", "_on_stall", "_timer", "_finished")

    def __init__(
        self,
        stream: IOStream,
        *,
        limit: int,
        timeout: float,
        on_overflow: Callable[[], None],
        on_stall: Callable[[], None],
    ) -> None:
        self._stream = stream
        self._limit = limit
        self._timeout = timeout
        self._on_overflow = on_overflow
        self._on_stall = on_stall
        self._timer: asyncio.TimerHandle | None = None
        self._finished = False

    def backed_up(self, flushed: asyncio.Future[None], size: int) -> None:
        """A write of ``size`` bytes left data unsent; ``flushed`` resolves once it has gone out."""
        if self._finished:
            return
        # Only bytes queued before this write count, so a single message larger than the limit
        # still reaches a client that keeps up. Tornado has no public size for its write queue.
        if len(self._stream._write_buffer) - size > self._limit:
            self._finish(self._on_overflow)
        elif self._timer is None:
            self._watch(flushed)

    def cancel(self) -> None:
        """The connection ended: no more callbacks."""
        self._finished = True
        self._stop_timer()

    def _watch(self, flushed: asyncio.Future[None]) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expired)
        flushed.add_done_callback(self._progressed)

    def _progressed(self, _: asyncio.Future[None]) -> None:
        self._stop_timer()
        if self._finished or self._stream.closed():
            return
        # Some bytes left in time; give whatever is still queued its own full timeout. An empty
        # write adds no bytes, only a future for everything queued so far.
        rest = self._stream.write(b"")
        if not rest.done():
            self._watch(rest)

    def _expired(self) -> None:
        self._timer = None
        if not self._finished and not self._stream.closed():
            self._finish(self._on_stall)

    def _finish(self, action: Callable[[], None]) -> None:
        self._finished = True
        self._stop_timer()
        action()

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
