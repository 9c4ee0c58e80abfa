"""The outbound half of a connection: ONE queue of whole serialized hub messages for every transport.

The hub layer only ever enqueues whole serialized hub messages on :class:`Outbox`; every transport
(WebSocket writer, SSE stream, each long poll) drains that same queue, so ordering and "whole
messages per unit" hold no matter which transport is attached.

The outbox is bounded in bytes while nobody drains it (a long-polling client between polls, a
stateful WebSocket waiting for its client to come back): a client that lets more than
``HubOptions.maximum_send_buffer_size`` pile up there is ended as a slow consumer. While a drainer
waits, frames leave at once and the transport's own guard watches its socket instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from signalr.options import HubOptions

__all__ = ["Frame", "Outbox"]

#: The outbox bound until the hub layer sets the endpoint's own (``Outbox.limit``).
DEFAULT_SEND_BUFFER_LIMIT = HubOptions().maximum_send_buffer_size


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One complete serialized hub message (or several) and whether it must go out as binary."""

    data: bytes
    binary: bool


class Outbox:
    """FIFO of outgoing frames shared by all transports of one connection.

    :param limit: bytes that may wait here, undrained, before the connection is a slow consumer.
    :param on_overflow: called once when that happens, after the backlog was dropped; it may
        :meth:`finish` the outbox with last words, otherwise the outbox is closed empty.
    """

    # Every connection has one, idle most of its life: slots, a list and futures made only while a
    # transport waits, rather than a deque and an asyncio.Event (about 1.5 KiB per connection).
    __slots__ = ("_frames", "_wakers", "_listener", "_closed", "_queued", "_drainers", "limit", "_on_overflow",
                 "direct")

    def __init__(
        self, *, limit: int = DEFAULT_SEND_BUFFER_LIMIT, on_overflow: Callable[[], None] | None = None
    ) -> None:
        self._frames: list[Frame] = []
        #: One future per transport waiting in :meth:`next_batch`, resolved when frames come or on close.
        self._wakers: list[asyncio.Future[None]] | None = None
        #: A transport that drains with callbacks rather than waiting (see :meth:`listen`).
        self._listener: Callable[[], None] | None = None
        self._closed = False
        #: Bytes in ``_frames``: an add per put and a reset per drain keep the bound cheap.
        self._queued = 0
        #: Transports waiting in :meth:`next_batch` (a superseded poll may not have left yet): what
        #: is queued while one waits leaves shortly.
        self._drainers = 0
        self.limit = limit
        self._on_overflow = on_overflow
        #: Set by an idle WebSocket writer: frames then go straight to the socket instead of waking
        #: the writer task (a broadcast to N connections would otherwise cost N task switches).
        self.direct: Callable[[bytes, bool], None] | None = None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (remaining frames may still be drained)."""
        return self._closed

    @property
    def draining(self) -> bool:
        """True while a transport waits for frames, which then leave without counting to the limit."""
        return self._drainers > 0

    def put(self, data: bytes, *, binary: bool) -> bool:
        """Enqueue one frame; never blocks. Returns False (and drops) after :meth:`close`, or when
        the undrained backlog is over the limit (the connection is then ended as a slow consumer)."""
        if self._closed:
            return False
        direct = self.direct
        if direct is not None and not self._frames:
            try:
                direct(data, binary)
                return True
            except Exception:  # noqa: BLE001 - superseded or broken socket: the writer sorts it out
                self.direct = None
        # Only bytes queued before this frame count, so one message larger than the limit still
        # reaches a client that keeps polling.
        if self._queued > self.limit and not self._drainers:
            self._overflow()
            return False
        self._frames.append(Frame(data=data, binary=binary))
        self._queued += len(data)
        self._wake()
        return True

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever frames are queued or the outbox closes, instead of waiting in
        :meth:`next_batch`; it counts as a waiting transport until :meth:`unlisten` (one at a time)."""
        if self._listener is None:
            self._drainers += 1
        self._listener = listener

    def unlisten(self, listener: Callable[[], None]) -> None:
        if self._listener == listener:
            self._listener = None
            self._drainers -= 1

    def _wake(self) -> None:
        wakers, self._wakers = self._wakers, None
        for waker in wakers or ():
            if not waker.done():
                waker.set_result(None)
        if self._listener is not None:
            self._listener()

    def _overflow(self) -> None:
        # The backlog is what the client did not come for; dropping it is the point of the bound.
        self._frames.clear()
        self._queued = 0
        on_overflow, self._on_overflow = self._on_overflow, None
        if on_overflow is not None:
            on_overflow()
        self.close()

    def finish(self, data: bytes, *, binary: bool) -> None:
        """Replace whatever is queued with ``data`` as the last frame, then close."""
        if self._closed:
            return
        self._frames.clear()
        self._frames.append(Frame(data=data, binary=binary))
        self._queued = len(data)
        self.close()

    def close(self) -> None:
        """No more frames; drainers get what is left, then ``None``."""
        self._closed = True
        self._wake()

    def clear(self) -> None:
        """Drop queued frames (stateful reconnect replays them from its own buffer)."""
        self._frames.clear()
        self._queued = 0

    def take_batch(self) -> list[Frame]:
        """Remove and return the queued frames, merged per frame kind, without waiting.

        Consecutive frames of the same kind are concatenated: several complete messages in one
        transport unit are allowed, split messages are not, and both hold here.
        """
        batch: list[Frame] = []
        frames, self._frames = self._frames, []
        for frame in frames:
            if batch and batch[-1].binary == frame.binary:
                batch[-1] = Frame(data=batch[-1].data + frame.data, binary=frame.binary)
            else:
                batch.append(frame)
        self._queued = 0
        return batch

    async def next_batch(self, timeout: float | None = None) -> list[Frame] | None:
        """Wait for frames. Returns them, ``[]`` on timeout, or ``None`` once closed and empty."""
        if not self._frames and not self._closed:
            self._drainers += 1
            waker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if self._wakers is None:
                self._wakers = [waker]
            else:
                self._wakers.append(waker)
            try:
                await asyncio.wait_for(waker, timeout)
            except TimeoutError:
                return []
            finally:
                self._drainers -= 1
                if self._wakers is not None and waker in self._wakers:
                    self._wakers.remove(waker)
        if self._frames:
            return self.take_batch()
        return None if self._closed else []
