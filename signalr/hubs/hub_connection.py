"""Per-connection hub lifecycle: handshake (with timeout) → parse → dispatch loop → Close.

The transport layer hands us bytes through ``connection.inbox`` and drains ``connection.outbox``;
this module never touches a socket. It is also the lifetime manager's sink for the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signalr.hubs import hub as hub_module
from signalr.hubs.clients import GroupManager, HubCallerClients
from signalr.connections.connection import HttpConnection
from signalr.errors import HandshakeError, ProtocolError
from signalr.hubs.hub import Hub, HubCallerContext, HubError, HubMethodTable, UploadStream
from signalr.hubs.dispatcher import NO_BACKLOG, MessageDispatch, Step
from signalr.hubs.invocations import InvocationRunner
from signalr.options import HubOptions, TransportType
from signalr.protocol import (
    PING,
    AckMessage,
    CloseMessage,
    HubMessage,
    HubProtocol,
    SequenceMessage,
    TransferFormat,
    get_protocol,
    parse_handshake_request,
    select_protocol,
    write_handshake_response,
)
from signalr.protocol.messages import is_trackable
from signalr.protocol.stateful import StatefulBuffer

if TYPE_CHECKING:
    from signalr.hubs.lifetime import HubLifetimeManager, SerializedMessage

log = logging.getLogger("signalr.hub")

HANDSHAKE_CANCELED = "Handshake was canceled."


@dataclass(frozen=True, slots=True, kw_only=True)
class _CloseRequest:
    error: str | None
    allow_reconnect: bool


class HubConnection(MessageDispatch, InvocationRunner):
    """Runs one client's hub session and receives broadcasts for it.

    Receiving lives in :class:`~signalr.hub_dispatch.MessageDispatch`, invocations in
    :class:`~signalr.hub_invocations.InvocationRunner`; this class holds the state they share, the
    output path, the handshake, the session's start and end, and the heartbeat.

    :param connection: the transport-level connection.
    :param hub_class: the hub type; a fresh instance serves each invocation.
    :param methods: the hub's method table.
    :param options: endpoint options.
    :param lifetime: the lifetime manager (broadcasts, groups).
    :param user: whatever the endpoint's user provider returned.
    :param clock: monotonic time source used by keep-alive and timeouts.
    """

    def __init__(
        self,
        *,
        connection: HttpConnection,
        hub_class: type[Hub],
        methods: HubMethodTable,
        options: HubOptions,
        lifetime: HubLifetimeManager,
        user: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connection_id = connection.connection_id
        self.connection = connection
        self._hub_class = hub_class
        self._methods = methods
        self._options = options
        self._lifetime = lifetime
        self._clock = clock
        self.protocol: HubProtocol | None = None
        self._binary = False
        self.context = HubCallerContext(
            connection_id=connection.connection_id,
            user=user,
            request=connection.request,
            abort=lambda: self.abort(error=None, allow_reconnect=False),
        )
        self._stateful: StatefulBuffer | None = None
        self._space = asyncio.Event()
        self._space.set()
        self._close_request: _CloseRequest | None = None
        self._closing = False
        now = clock()
        self._last_ping_sent = now
        self._last_received = now
        self._busy = 0
        # Unparsed tail of the input; a stalled batch's remaining messages; work handed from the
        # inline receive path to the receive loop.
        self._buffer = b""
        self._backlog: tuple[Sequence[HubMessage], int] = NO_BACKLOG
        self._handoff: Step | BaseException = None
        # Invocations holding a slot; the receive loop's wait for a free one; set once input ended.
        self._parallel = options.maximum_parallel_invocations_per_client
        self._running = 0
        self._slot: asyncio.Future[None] | None = None
        self._stopped = False
        self._caller_clients: HubCallerClients | None = None
        self._group_manager: GroupManager | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._cancelled_streams: set[str] = set()
        self._uploads: dict[str, UploadStream] = {}
        self.finished = asyncio.Event()

    # -- sink used by the lifetime manager -------------------------------------------------

    def send_serialized(self, message: SerializedMessage) -> None:
        """Queue a pre-serialized broadcast; never blocks, never raises."""
        try:
            if self.protocol is None or self._closing:
                return
            self._put(message.bytes_for(self.protocol), tracked=True)
        except Exception:  # noqa: BLE001 - one bad connection must not break a broadcast
            log.exception("dropping broadcast for connection %s", self.connection_id)

    # -- output ------------------------------------------------------------------------------

    def _put(self, data: bytes, *, tracked: bool) -> None:
        if self._stateful is not None and tracked:
            self._stateful.record_outgoing(data)
            if self._stateful.over_limit:
                self._space.clear()
        self.connection.outbox.put(data, binary=self._binary)

    def _write(self, message: HubMessage) -> None:
        assert self.protocol is not None
        self._put(self.protocol.write_message(message), tracked=is_trackable(message))

    async def _send(self, message: HubMessage) -> None:
        """Send from our own tasks, waiting for Acks while the replay buffer is full."""
        while not self._space.is_set() and not self._closing:
            await self._space.wait()
        if not self._closing:
            self._write(message)

    # -- lifecycle ---------------------------------------------------------------------------

    def abort(self, *, error: str | None = None, allow_reconnect: bool = False) -> None:
        """End the connection from the server side, sending Close first."""
        if self._close_request is None:
            self._close_request = _CloseRequest(error=error, allow_reconnect=allow_reconnect)
        self.connection.inbox.feed_eof()

    async def run(self) -> None:
        """The whole session; returns when the connection is over."""
        self.connection.on_tick = self.tick
        self.connection.on_reattach = self._on_reattach
        self.connection.on_overflow = self._on_overflow
        self.connection.outbox.limit = self._options.maximum_send_buffer_size
        inbox = self.connection.inbox
        inbox.limit = self._options.application_max_buffer_size
        # However the connection ends (client gone, DELETE, server abort), its work ends with it.
        inbox.on_end = self._stop_invocations
        if inbox.ended:
            self._stopped = True
        try:
            leftover = await self._handshake()
            if leftover is None:
                return
            await self._session(leftover)
        finally:
            self._closing = True
            self._space.set()
            inbox.on_end = None
            self.connection.outbox.close()
            self.finished.set()

    async def _handshake(self) -> bytes | None:
        buffer = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.handshake_timeout
        limit = self._options.maximum_receive_message_size
        while True:
            try:
                chunk = await asyncio.wait_for(self.connection.inbox.receive(), deadline - loop.time())
            except TimeoutError:
                log.info("handshake timed out for connection %s", self.connection_id)
                return self._handshake_failed(HANDSHAKE_CANCELED)
            if chunk is None:
                if self._close_request is not None:
                    return self._handshake_failed(HANDSHAKE_CANCELED)
                return None  # the client left first: send nothing
            buffer += chunk
            try:
                request, rest = parse_handshake_request(buffer, max_message_size=limit)
                if request is None:
                    continue
                protocol = select_protocol(
                    request,
                    protocols={n: p for n in self._options.protocols if (p := get_protocol(n, max_message_size=limit))},
                    transfer_formats=(
                        (TransferFormat.TEXT,)
                        if self.connection.transport is TransportType.SERVER_SENT_EVENTS
                        else (TransferFormat.TEXT, TransferFormat.BINARY)
                    ),
                )
            except HandshakeError as exc:
                log.info("bad handshake from connection %s: %s", self.connection_id, exc.detail or exc)
                text = str(exc)
                if self._options.enable_detailed_errors and exc.detail:
                    text = f"{text} {exc.detail}"
                return self._handshake_failed(text)
            break
        binary = protocol.transfer_format == TransferFormat.BINARY
        self.protocol = protocol
        self._binary = binary
        # Stateful reconnect only for clients that negotiated it AND speak protocol version 2;
        # older clients (and pysignalr/Java) must never see Ack/Sequence.
        stateful = (
            self.connection.stateful_reconnect
            and request.version >= 2
            and self.connection.transport is TransportType.WEBSOCKETS
        )
        self.connection.stateful_reconnect = stateful
        if stateful:
            self._stateful = StatefulBuffer(limit=self._options.stateful_reconnect_buffer_size)
        self.connection.outbox.put(write_handshake_response(), binary=binary)
        # The client timeout runs from here: a client that never sends anything is closed too.
        self._last_received = self._clock()
        log.debug("connection %s handshake ok (%s v%s)", self.connection_id, protocol.name, request.version)
        return rest

    def _handshake_failed(self, error: str) -> None:
        self.connection.outbox.put(write_handshake_response(error=error), binary=False)
        return None

    def _new_hub(self) -> Hub:
        # The proxies hold no per-call state, so each connection builds them once, on first use.
        if self._caller_clients is None:
            self._caller_clients = HubCallerClients(self._lifetime, self.connection_id)
            self._group_manager = GroupManager(self._lifetime)
        hub = self._hub_class()
        hub.context = self.context
        hub.clients = self._caller_clients
        hub.groups = self._group_manager  # type: ignore[assignment]
        return hub

    async def _session(self, leftover: bytes) -> None:
        try:
            await self._lifetime.on_connected(self)
        except Exception:  # noqa: BLE001 - e.g. the backplane is unreachable: let the client retry
            log.exception("lifetime manager refused connection %s", self.connection_id)
            self._write(CloseMessage(error=hub_module.CONNECTION_ERROR, allow_reconnect=True))
            return
        exception: BaseException | None = None
        try:
            try:
                await self._new_hub().on_connected()
            except Exception as exc:  # noqa: BLE001 - reported to the client as a Close error
                log.exception("on_connected failed for connection %s", self.connection_id)
                exception = exc
                self._close_request = _CloseRequest(error=self._close_text(exc), allow_reconnect=False)
            else:
                exception = await self._receive_loop(leftover)
        finally:
            self._stop_invocations()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            request = self._close_request
            if request is not None and self.protocol is not None:
                self._write(CloseMessage(error=request.error, allow_reconnect=request.allow_reconnect))
            self._closing = True
            self.connection.outbox.close()
            try:
                await self._lifetime.on_disconnected(self)
            except Exception:  # noqa: BLE001
                log.exception("lifetime manager failed to disconnect %s", self.connection_id)
            try:
                await self._new_hub().on_disconnected(exception)
            except Exception:  # noqa: BLE001
                log.exception("on_disconnected failed for connection %s", self.connection_id)
            log.debug("connection %s ended", self.connection_id)

    def _close_text(self, exc: BaseException) -> str:
        if isinstance(exc, HubError) or self._options.enable_detailed_errors:
            return f"{hub_module.CONNECTION_ERROR} {type(exc).__name__}: {exc}"
        return hub_module.CONNECTION_ERROR

    def _close_after_protocol_error(self, exc: ProtocolError) -> None:
        text = hub_module.CONNECTION_ERROR
        if self._options.enable_detailed_errors:
            text = f"{text} InvalidDataException: {exc}"
        self._close_request = _CloseRequest(error=text, allow_reconnect=True)

    # -- heartbeat & stateful reconnect -------------------------------------------------------

    def tick(self, now: float) -> None:
        """Called every heartbeat: keep-alive Ping, client timeout, stateful Ack."""
        if self.protocol is None or self._closing:
            return
        if self._stateful is not None:
            due = self._stateful.ack_due(now)
            if due is not None:
                self._write(AckMessage(sequence_id=due))
        if self.connection.transport is TransportType.LONG_POLLING:
            return  # long polling is inherently keep-alive: no Pings, no ping timeout
        if self.connection.inactive_since is not None:
            return  # a stateful connection waiting for its client to re-attach
        if now - self._last_ping_sent >= self._options.keep_alive_interval:
            self._last_ping_sent = now
            self._write(PING)
        if self._busy == 0 and now - self._last_received > self._options.client_timeout_interval:
            log.info("client timeout on connection %s", self.connection_id)
            self.abort(error=hub_module.CONNECTION_ERROR, allow_reconnect=True)

    def _on_overflow(self) -> None:
        """The client let more than the send buffer limit pile up: the Close replaces the backlog."""
        if self.protocol is not None:
            close = CloseMessage(error=hub_module.CONNECTION_ERROR, allow_reconnect=True)
            self.connection.outbox.finish(self.protocol.write_message(close), binary=self._binary)
        self.abort(error=hub_module.CONNECTION_ERROR, allow_reconnect=True)

    def _on_reattach(self) -> None:
        """A reconnecting WebSocket took over: Sequence first, then everything unacknowledged."""
        if self._stateful is None or self.protocol is None or self._close_request is not None:
            return  # (a session already closing keeps its queued Close rather than a replay)
        self.connection.outbox.clear()
        first, pending = self._stateful.replay()
        self.connection.outbox.put(self.protocol.write_message(SequenceMessage(sequence_id=first)), binary=self._binary)
        for data in pending:
            self.connection.outbox.put(data, binary=self._binary)
        self._last_received = self._clock()
