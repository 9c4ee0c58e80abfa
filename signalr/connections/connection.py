"""Transport-level connection state: one inbound byte queue (:mod:`signalr.connections.inbox`) and ONE outbound
frame queue.

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
import enum
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from signalr.connections.inbox import Inbox
from signalr.options import HubOptions, TransportType

__all__ = ["Activation", "ConnectionStatus", "Frame", "HttpConnection", "Inbox", "Outbox", "RequestInfo"]

log = logging.getLogger("signalr.transport")

#: The outbox bound until the hub layer sets the endpoint's own (``Outbox.limit``).
DEFAULT_SEND_BUFFER_LIMIT = HubOptions().maximum_send_buffer_size


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One complete serialized hub message (or several) and whether it must go out as binary."""

    data: bytes
    binary: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestInfo:
    """The parts of the HTTP request that started the connection, exposed to hubs.

    Framework-neutral so that no Tornado object reaches hub code.
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    remote_ip: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)
    access_token: str | None = None


class Outbox:
    """FIFO of outgoing frames shared by all transports of one connection.

    :param limit: bytes that may wait here, undrained, before the connection is a slow consumer.
    :param on_overflow: called once when that happens, after the backlog was dropped; it may
        :meth:`finish` the outbox with last words, otherwise the outbox is closed empty.
    """

    def __init__(
        self, *, limit: int = DEFAULT_SEND_BUFFER_LIMIT, on_overflow: Callable[[], None] | None = None
    ) -> None:
        self._frames: deque[Frame] = deque()
        self._ready = asyncio.Event()
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
        self._ready.set()
        return True

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
        self._ready.set()

    def clear(self) -> None:
        """Drop queued frames (stateful reconnect replays them from its own buffer)."""
        self._frames.clear()
        self._queued = 0
        if not self._closed:
            self._ready.clear()

    def take_batch(self) -> list[Frame]:
        """Remove and return the queued frames, merged per frame kind, without waiting.

        Consecutive frames of the same kind are concatenated: several complete messages in one
        transport unit are allowed, split messages are not, and both hold here.
        """
        batch: list[Frame] = []
        while self._frames:
            frame = self._frames.popleft()
            if batch and batch[-1].binary == frame.binary:
                batch[-1] = Frame(data=batch[-1].data + frame.data, binary=frame.binary)
            else:
                batch.append(frame)
        self._queued = 0
        if not self._closed:
            self._ready.clear()
        return batch

    async def next_batch(self, timeout: float | None = None) -> list[Frame] | None:
        """Wait for frames. Returns them, ``[]`` on timeout, or ``None`` once closed and empty."""
        if not self._frames and not self._closed:
            self._drainers += 1
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return []
            finally:
                self._drainers -= 1
        if self._frames:
            return self.take_batch()
        return None if self._closed else []


class ConnectionStatus(enum.Enum):
    """ASP.NET's three states: a transport request attached or not, or gone for good."""

    INACTIVE = "inactive"
    ACTIVE = "active"
    DISPOSED = "disposed"


class Activation(enum.Enum):
    """Outcome of a transport request trying to attach to a connection."""

    STARTED = "started"  # first attach: the application must be started
    RESUMED = "resumed"  # a later long poll
    REATTACHED = "reattached"  # stateful reconnect: replay then continue
    CONFLICT = "conflict"  # 409
    WRONG_TRANSPORT = "wrong_transport"  # 400
    GONE = "gone"  # 404


class HttpConnection:
    """One logical SignalR connection at the transport layer.

    :param connection_id: public id (what hubs and other clients see).
    :param token: private token accepted in ``id=``.
    :param negotiate_version: 0 or 1; ``None`` for skip-negotiation WebSockets.
    :param stateful_reconnect: negotiated with ``useStatefulReconnect`` (the hub layer may still
        turn it off when the handshake version is < 2).
    :param now: creation time from the server clock.
    """

    def __init__(
        self,
        *,
        connection_id: str,
        token: str,
        negotiate_version: int | None,
        stateful_reconnect: bool,
        now: float,
    ) -> None:
        self.connection_id = connection_id
        self.token = token
        self.negotiate_version = negotiate_version
        self.stateful_reconnect = stateful_reconnect
        self.transport: TransportType | None = None
        self.status = ConnectionStatus.INACTIVE
        self.inactive_since: float | None = now
        self.outbox = Outbox(on_overflow=self._slow_consumer)
        self.inbox = Inbox()
        self.request = RequestInfo()
        self.started = False
        # Set by the hub layer: periodic tick and stateful-reconnect replay hook.
        self.on_tick: Callable[[float], None] | None = None
        self.on_reattach: Callable[[], None] | None = None
        # Set by the hub layer: the outbox overflowed; may ``outbox.finish`` with a Close message.
        self.on_overflow: Callable[[], None] | None = None
        # Set by the attached transport: aborts it (e.g. a newer stateful socket replaces it).
        self.abort_transport: Callable[[], None] | None = None
        self.post_lock = asyncio.Lock()
        self._attach_serial = 0

    def __repr__(self) -> str:
        return f"<HttpConnection {self.connection_id} {self.transport} {self.status.value}>"

    @property
    def disposed(self) -> bool:
        return self.status is ConnectionStatus.DISPOSED

    @property
    def reconnect_expected(self) -> bool:
        """True when a dropped WebSocket may come back with the same token (stateful reconnect)."""
        return self.stateful_reconnect and self.transport is TransportType.WEBSOCKETS

    def activate(self, transport: TransportType) -> tuple[Activation, int]:
        """Attach a transport request; returns the outcome and an attachment serial.

        The serial lets a finishing request tell whether it is still the current one.
        """
        if self.disposed:
            return Activation.GONE, 0
        if self.transport is not None and self.transport is not transport:
            return Activation.WRONG_TRANSPORT, 0
        # A second WS/SSE is a conflict, except a stateful client replacing its dropped socket;
        # for long polling the newer poll simply wins.
        persistent = transport is not TransportType.LONG_POLLING
        if persistent and self.status is ConnectionStatus.ACTIVE and not (self.reconnect_expected and self.started):
            return Activation.CONFLICT, 0
        self._attach_serial += 1
        previous_abort, self.abort_transport = self.abort_transport, None
        if previous_abort is not None:
            # A newer poll / reconnecting socket wins over the one still attached.
            previous_abort()
        self.transport = transport
        self.status = ConnectionStatus.ACTIVE
        self.inactive_since = None
        if not self.started:
            self.started = True
            return Activation.STARTED, self._attach_serial
        if transport is TransportType.WEBSOCKETS:
            return Activation.REATTACHED, self._attach_serial
        return Activation.RESUMED, self._attach_serial

    def _slow_consumer(self) -> None:
        log.warning("connection %s is not collecting its messages: closing it", self.connection_id)
        if self.on_overflow is not None:
            self.on_overflow()

    def is_current(self, serial: int) -> bool:
        """Whether the attachment ``serial`` is still the latest one."""
        return serial == self._attach_serial and not self.disposed

    def deactivate(self, serial: int, now: float) -> None:
        """The transport request ``serial`` ended without ending the connection."""
        if self.is_current(serial):
            self.status = ConnectionStatus.INACTIVE
            self.inactive_since = now
            self.abort_transport = None

    def dispose(self) -> None:
        """End the connection for good: the application sees end of input, drains see close."""
        if self.disposed:
            return
        self.status = ConnectionStatus.DISPOSED
        self.inbox.feed_eof()
        self.outbox.close()
        abort, self.abort_transport = self.abort_transport, None
        if abort is not None:
            abort()
