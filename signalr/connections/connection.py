"""Transport-level connection state: what started it, its status and attachments, and its two byte
queues: :class:`~signalr.connections.inbox.Inbox` (from the client) and
:class:`~signalr.connections.outbox.Outbox` (to it), which every transport shares.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from signalr.connections.inbox import Inbox
from signalr.connections.outbox import Outbox
from signalr.options import HttpTransportType

__all__ = ["Activation", "ConnectionStatus", "HttpConnection", "RequestInfo"]

log = logging.getLogger("signalr.transport")


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestInfo:
    """The parts of the HTTP request that started the connection, exposed to hubs.

    Framework-neutral so that no Tornado object reaches hub code.
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    remote_ip: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)
    access_token: str | None = None


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

    # One per client for its whole life: no per-instance dict.
    __slots__ = (
        "connection_id", "token", "negotiate_version", "stateful_reconnect", "transport", "status",
        "inactive_since", "outbox", "inbox", "request", "started", "on_tick", "on_reattach", "on_overflow",
        "abort_transport", "_post_lock", "_attach_serial",
    )

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
        self.transport: HttpTransportType | None = None
        self.status = ConnectionStatus.INACTIVE
        self.inactive_since: float | None = now
        self.outbox = Outbox(on_overflow=self._slow_consumer)
        self.inbox = Inbox()
        self.request = RequestInfo()
        self.started = False
        # Set by the hub layer: periodic tick (returning when it is next needed, or None: every
        # heartbeat) and stateful-reconnect replay hook.
        self.on_tick: Callable[[float], float | None] | None = None
        self.on_reattach: Callable[[], None] | None = None
        # Set by the hub layer: the outbox overflowed; may ``outbox.finish`` with a Close message.
        self.on_overflow: Callable[[], None] | None = None
        # Set by the attached transport: aborts it (e.g. a newer stateful socket replaces it).
        self.abort_transport: Callable[[], None] | None = None
        self._post_lock: asyncio.Lock | None = None
        self._attach_serial = 0

    def __repr__(self) -> str:
        return f"<HttpConnection {self.connection_id} {self.transport} {self.status.value}>"

    @property
    def post_lock(self) -> asyncio.Lock:
        """Serialises the client's send POSTs (long polling, SSE); made on the first one, since a
        WebSocket client never sends any."""
        if self._post_lock is None:
            self._post_lock = asyncio.Lock()
        return self._post_lock

    @property
    def disposed(self) -> bool:
        return self.status is ConnectionStatus.DISPOSED

    @property
    def reconnect_expected(self) -> bool:
        """True when a dropped WebSocket may come back with the same token (stateful reconnect)."""
        return self.stateful_reconnect and self.transport is HttpTransportType.WEBSOCKETS

    def activate(self, transport: HttpTransportType) -> tuple[Activation, int]:
        """Attach a transport request; returns the outcome and an attachment serial.

        The serial lets a finishing request tell whether it is still the current one.
        """
        if self.disposed:
            return Activation.GONE, 0
        if self.transport is not None and self.transport is not transport:
            return Activation.WRONG_TRANSPORT, 0
        # A second WS/SSE is a conflict, except a stateful client replacing its dropped socket;
        # for long polling the newer poll simply wins.
        persistent = transport is not HttpTransportType.LONG_POLLING
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
        if transport is HttpTransportType.WEBSOCKETS:
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
