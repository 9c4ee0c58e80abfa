"""The inbound half of a connection: bytes from the client on their way to the hub, bounded.

The transport feeds what it reads; the hub takes it when it can process more. Bytes that wait here
count toward a limit (``HubOptions.application_max_buffer_size``); past it the transport stops
reading until the hub has taken them, so a client that sends faster than its invocations run is
held back by TCP (or by its unanswered POST) instead of filling the server's memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from signalr.options import HubOptions

#: The bound until the hub layer sets the endpoint's own (``Inbox.limit``).
DEFAULT_RECEIVE_BUFFER_LIMIT = HubOptions().application_max_buffer_size


class Inbox:
    """Bytes received from the client, in arrival order, then end of input.

    One reader only, so a list and a single waiter future do the job of an ``asyncio.Queue``,
    whose four deques (and Event) cost about 3 KiB per idle connection.

    While the reader is parked in :meth:`receive` with nothing queued, bytes go straight to its
    :attr:`handler` instead of waking it: most messages (an Echo, a Ping) are then handled inside
    the transport's own callback, saving a task switch per message. A handler that cannot finish
    synchronously calls :meth:`interrupt` to have the reader take over.

    Only bytes that had to be queued count toward :attr:`limit`: the transport asks
    :meth:`until_below` after each feed whether it may read on.
    """

    __slots__ = ("_chunks", "_queued", "_ended", "_waiter", "_taken", "_interrupted", "handler", "on_end", "limit")

    def __init__(self, limit: int = DEFAULT_RECEIVE_BUFFER_LIMIT) -> None:
        self._chunks: list[bytes] = []
        self._queued = 0
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        #: Resolved (and dropped) whenever the reader takes the queued bytes or input ends.
        self._taken: asyncio.Future[None] | None = None
        self._interrupted = False
        self.handler: Callable[[bytes], None] | None = None
        #: Called once when input ends (the connection is over): the hub drops its pending work.
        self.on_end: Callable[[], None] | None = None
        self.limit = limit

    @property
    def ended(self) -> bool:
        return self._ended

    def feed(self, data: bytes) -> None:
        """Hand received bytes to the application (ignored after end of input)."""
        if not self._ended and data:
            handler, waiter = self.handler, self._waiter
            if handler is not None and waiter is not None and not waiter.done() and not self._chunks:
                handler(data)
                return
            self._chunks.append(data)
            self._queued += len(data)
            self._wake()

    def until_below(self, level: int) -> asyncio.Future[None] | None:
        """``None`` while fewer than ``level`` bytes wait for the reader; otherwise a future that
        resolves once the reader took them or input ended (check again then). The transport reads
        on below :attr:`limit`; a POST is answered once its bytes were taken (``level`` 1)."""
        if self._queued < level or self._ended:
            return None
        if self._taken is None:
            self._taken = asyncio.get_running_loop().create_future()
        return self._taken

    def feed_eof(self) -> None:
        """Signal that the client will send nothing more (or that the server ended the connection)."""
        if not self._ended:
            self._ended = True
            self._wake()
            self._release()
            on_end, self.on_end = self.on_end, None
            if on_end is not None:
                on_end()

    def interrupt(self) -> None:
        """Wake the reader without data: :meth:`receive` returns ``b""`` if nothing else is queued."""
        self._interrupted = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release(self) -> None:
        taken, self._taken = self._taken, None
        if taken is not None and not taken.done():
            taken.set_result(None)

    async def receive(self) -> bytes | None:
        """All bytes received since the last call (joined), ``b""`` after :meth:`interrupt`, or
        ``None`` once input has ended."""
        while not self._chunks:
            if self._interrupted:
                self._interrupted = False
                return b""
            if self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        self._interrupted = False
        chunks, self._chunks = self._chunks, []
        self._queued = 0
        self._release()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
