"""Per-connection hub lifecycle: handshake (with timeout) → session → Close.

The transport layer hands us bytes through ``connection.inbox`` and drains ``connection.outbox``;
this module never touches a socket. Once the handshake has chosen a protocol, the session is the
work of four collaborators: :class:`~signalr.hubs.output.HubOutput` (everything sent),
:class:`~signalr.hubs.dispatcher.Dispatcher` (everything received),
:class:`~signalr.hubs.invocations.Invocations` (the hub methods the client calls) and
:class:`~signalr.hubs.heartbeat.Heartbeat` (Pings, Acks, the client timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signalr.connections.connection import HttpConnection
from signalr.errors import HandshakeError, ProtocolError
from signalr.hubs.dispatcher import Dispatcher
from signalr.hubs.error_texts import CONNECTION_ERROR
from signalr.hubs.heartbeat import Heartbeat
from signalr.hubs.hub import Hub, HubActivator, HubCallerContext, HubError
from signalr.hubs.invocations import Invocations
from signalr.hubs.methods import HubMethodTable
from signalr.hubs.output import HubOutput
from signalr.options import HubOptions, HttpTransportType
from signalr.protocol import (
    CloseMessage,
    HubProtocol,
    TransferFormat,
    get_protocol,
    parse_handshake_request,
    select_protocol,
    write_handshake_response,
)
from signalr.protocol.stateful import StatefulBuffer

if TYPE_CHECKING:
    from signalr.hubs.lifetime import HubLifetimeManager, SerializedMessage

log = logging.getLogger("signalr.hub")

HANDSHAKE_CANCELED = "Handshake was canceled."


@dataclass(frozen=True, slots=True, kw_only=True)
class _CloseRequest:
    error: str | None
    allow_reconnect: bool


class HubConnection:
    """Runs one client's hub session and receives broadcasts for it.

    :param connection: the transport-level connection.
    :param hub_class: the hub type; a fresh instance serves each invocation.
    :param methods: the hub's method table.
    :param options: endpoint options.
    :param lifetime: the lifetime manager (broadcasts, groups).
    :param user: whatever the endpoint's user provider returned.
    :param clock: monotonic time source used by keep-alive and timeouts.
    """

    __slots__ = (
        "connection_id",
        "connection",
        "context",
        "_methods",
        "_options",
        "_lifetime",
        "_clock",
        "_created",
        "_activator",
        "_close_request",
        "_ended",
        "_output",
        "_invocations",
        "_dispatcher",
        "_heartbeat",
    )

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
        self.context = HubCallerContext(
            connection_id=connection.connection_id,
            user=user,
            request=connection.request,
            abort=lambda: self.abort(error=None, allow_reconnect=False),
            details=self,
        )
        self._methods = methods
        self._options = options
        self._lifetime = lifetime
        self._clock = clock
        self._created = clock()
        self._activator = HubActivator(hub_class, self.context, lifetime)
        self._close_request: _CloseRequest | None = None
        self._ended = False
        # Built once the handshake has chosen a protocol (see _accept).
        self._output: HubOutput | None = None
        self._invocations: Invocations | None = None
        self._dispatcher: Dispatcher | None = None
        self._heartbeat: Heartbeat | None = None

    # -- what the context tells hub methods about the connection ------------------------------

    @property
    def transport_name(self) -> str | None:
        transport = self.connection.transport
        return transport.value if transport is not None else None

    @property
    def protocol_name(self) -> str | None:
        output = self._output
        return output.protocol.name if output is not None else None

    # -- sink used by the lifetime manager -------------------------------------------------

    def send_serialized(self, message: SerializedMessage) -> None:
        """Queue a pre-serialized broadcast; never blocks, never raises."""
        output = self._output
        try:
            if output is None or output.closing:
                return
            output.put(message.bytes_for(output.protocol), tracked=True)
        except Exception:  # noqa: BLE001 - one bad connection must not break a broadcast
            log.exception("dropping broadcast for connection %s", self.connection_id)

    # -- lifecycle ---------------------------------------------------------------------------

    def abort(self, *, error: str | None = None, allow_reconnect: bool = False) -> None:
        """End the connection from the server side, sending Close first."""
        if self._close_request is None:
            self._close_request = _CloseRequest(error=error, allow_reconnect=allow_reconnect)
        self.connection.inbox.feed_eof()

    async def run(self) -> None:
        """The whole session; returns when the connection is over."""
        connection = self.connection
        connection.on_reattach = self._on_reattach
        connection.on_overflow = self._on_overflow
        connection.outbox.limit = self._options.maximum_send_buffer_size
        inbox = connection.inbox
        inbox.limit = self._options.application_max_buffer_size
        # However the connection ends (client gone, DELETE, server abort), its work ends with it.
        inbox.on_end = self._input_ended
        if inbox.ended:
            self._ended = True
        try:
            leftover = await self._handshake()
            if leftover is None:
                return
            await self._session(leftover)
        finally:
            inbox.on_end = None
            if self._output is not None:
                self._output.close()
            else:
                connection.outbox.close()

    def _input_ended(self) -> None:
        self._ended = True
        if self._invocations is not None:
            self._invocations.stop()

    async def _handshake(self) -> bytes | None:
        """Wait for the handshake request and answer it; returns what followed it, or ``None`` when
        the session does not start (the client left, or the handshake failed and was answered)."""
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
                protocol = select_protocol(request, protocols=self._protocols(limit), transfer_formats=self._formats())
            except HandshakeError as exc:
                log.info("bad handshake from connection %s: %s", self.connection_id, exc.detail or exc)
                text = str(exc)
                if self._options.enable_detailed_errors and exc.detail:
                    text = f"{text} {exc.detail}"
                return self._handshake_failed(text)
            self._accept(protocol, request.version)
            return rest

    def _protocols(self, limit: int | None) -> dict[str, HubProtocol]:
        return {n: p for n in self._options.protocols if (p := get_protocol(n, max_message_size=limit))}

    def _formats(self) -> tuple[TransferFormat, ...]:
        if self.connection.transport is HttpTransportType.SERVER_SENT_EVENTS:
            return (TransferFormat.TEXT,)
        return (TransferFormat.TEXT, TransferFormat.BINARY)

    def _handshake_failed(self, error: str) -> None:
        self.connection.outbox.put(write_handshake_response(error=error), binary=False)
        return None

    def _accept(self, protocol: HubProtocol, version: int) -> None:
        """The handshake chose ``protocol``: build the session's collaborators and answer the client."""
        connection = self.connection
        # Stateful reconnect only for clients that negotiated it AND speak protocol version 2;
        # older clients (and pysignalr/Java) must never see Ack/Sequence.
        stateful = (
            connection.stateful_reconnect and version >= 2 and connection.transport is HttpTransportType.WEBSOCKETS
        )
        connection.stateful_reconnect = stateful
        replay = StatefulBuffer(limit=self._options.stateful_reconnect_buffer_size) if stateful else None
        output = self._output = HubOutput(connection.outbox, protocol, replay)
        connection.outbox.put(write_handshake_response(), binary=output.binary)
        # The client timeout runs from here: a client that never sends anything is closed too.
        heartbeat = self._heartbeat = Heartbeat(
            connection=connection,
            output=output,
            options=self._options,
            last_ping=self._created,
            now=self._clock(),
            on_timeout=lambda: self.abort(error=CONNECTION_ERROR, allow_reconnect=True),
        )
        invocations = self._invocations = Invocations(
            connection_id=self.connection_id,
            methods=self._methods,
            options=self._options,
            activator=self._activator,
            output=output,
            heartbeat=heartbeat,
            clock=self._clock,
        )
        self._dispatcher = Dispatcher(
            connection_id=self.connection_id,
            inbox=connection.inbox,
            output=output,
            invocations=invocations,
            heartbeat=heartbeat,
            clock=self._clock,
        )
        if self._ended:
            invocations.stop()
        connection.on_tick = heartbeat.tick
        log.debug("connection %s handshake ok (%s v%s)", self.connection_id, protocol.name, version)

    async def _session(self, leftover: bytes) -> None:
        assert self._output is not None and self._dispatcher is not None
        try:
            await self._lifetime.on_connected(self)
        except Exception:  # noqa: BLE001 - e.g. the backplane is unreachable: let the client retry
            log.exception("lifetime manager refused connection %s", self.connection_id)
            self._output.write(CloseMessage(error=CONNECTION_ERROR, allow_reconnect=True))
            return
        exception: BaseException | None = None
        try:
            try:
                await self._activator.create().on_connected()
            except Exception as exc:  # noqa: BLE001 - reported to the client as a Close error
                log.exception("on_connected failed for connection %s", self.connection_id)
                exception = exc
                self._close_request = _CloseRequest(error=self._close_text(exc), allow_reconnect=False)
            else:
                exception = await self._dispatcher.run(leftover)
                if exception is not None:
                    self._close_after_protocol_error(exception)
        finally:
            await self._end(exception)

    async def _end(self, exception: BaseException | None) -> None:
        """Stop the invocations, send the Close that was asked for, then tell the lifetime manager and the hub."""
        assert self._output is not None and self._invocations is not None
        self._invocations.stop()
        await self._invocations.wait()
        request = self._close_request
        if request is not None:
            self._output.write(CloseMessage(error=request.error, allow_reconnect=request.allow_reconnect))
        self._output.close()
        try:
            await self._lifetime.on_disconnected(self)
        except Exception:  # noqa: BLE001
            log.exception("lifetime manager failed to disconnect %s", self.connection_id)
        try:
            await self._activator.create().on_disconnected(exception)
        except Exception:  # noqa: BLE001
            log.exception("on_disconnected failed for connection %s", self.connection_id)
        log.debug("connection %s ended", self.connection_id)

    def _close_text(self, exc: BaseException) -> str:
        if isinstance(exc, HubError) or self._options.enable_detailed_errors:
            return f"{CONNECTION_ERROR} {type(exc).__name__}: {exc}"
        return CONNECTION_ERROR

    def _close_after_protocol_error(self, exc: ProtocolError) -> None:
        text = CONNECTION_ERROR
        if self._options.enable_detailed_errors:
            text = f"{text} InvalidDataException: {exc}"
        self._close_request = _CloseRequest(error=text, allow_reconnect=True)

    # -- transport events ---------------------------------------------------------------------

    def _on_overflow(self) -> None:
        """The client let more than the send buffer limit pile up: the Close replaces the backlog."""
        if self._output is not None:
            self._output.finish(CloseMessage(error=CONNECTION_ERROR, allow_reconnect=True))
        self.abort(error=CONNECTION_ERROR, allow_reconnect=True)

    def _on_reattach(self) -> None:
        """A reconnecting WebSocket took over: Sequence first, then everything unacknowledged."""
        output = self._output
        if output is None or output.stateful is None or self._close_request is not None:
            return  # (a session already closing keeps its queued Close rather than a replay)
        output.replay()
        assert self._heartbeat is not None
        self._heartbeat.last_heard = self._clock()
