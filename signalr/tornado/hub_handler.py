"""``{hub}``: the WebSocket, Server-Sent Events and Long Polling transports, POST sends and DELETE.

Each request attaches to the ``id=`` connection and maps the framework-neutral outcomes of
:mod:`signalr.connections.connection` and :mod:`signalr.connections.transports` to the status codes of the reference §1.
Every transport's socket gets a :class:`~signalr.tornado.flow.WriteGuard`, so a client that stops
reading is disconnected instead of being buffered for without bound. In the other direction, what a
client sends is bounded too: a WebSocket message or POST body over ``HubOptions.receive_unit_limit``
is refused before it is read, and while the hub's inbox is full a WebSocket is not read and a send
POST is not answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import tornado.httputil
import tornado.web
import tornado.websocket
from tornado.iostream import IOStream, StreamClosedError

from signalr.connections.connection import Activation, HttpConnection, RequestInfo
from signalr.connections.transports import long_polling, sse, websocket
from signalr.hubs.error_texts import CONNECTION_ERROR
from signalr.options import HttpTransportType
from signalr.tornado.base import query_arguments, request_info
from signalr.tornado.flow import WriteGuard
from signalr.tornado.sends import SendRequests
from signalr.tornado.ws_reader import HubWebSocketProtocol
from signalr.tornado.ws_writer import WebSocketPeer

log = logging.getLogger("signalr.transport")

#: RFC 6455 "policy violation": the client did not read fast enough to stay under the byte limit.
CLOSE_POLICY_VIOLATION = 1008


@tornado.web.stream_request_body
class HubHandler(SendRequests, tornado.websocket.WebSocketHandler):
    """``{hub}``: WebSocket upgrade, SSE stream, long poll (GET), send (POST), stop (DELETE).

    Request bodies are streamed (see :class:`~signalr.tornado.sends.SendRequests`) so that an
    oversized send is refused from its headers instead of after Tornado buffered it whole.
    """

    _connection: HttpConnection | None = None
    _serial = 0
    _mode: HttpTransportType | None = None
    _activation: Activation | None = None
    _user: Any = None
    _info: RequestInfo | None = None
    _gone: asyncio.Event | None = None
    _writer: websocket.WebSocketWriter | None = None
    _guard: WriteGuard | None = None

    @property
    def max_message_size(self) -> int:
        """The largest WebSocket message accepted; a larger one is closed with 1009 from its header."""
        limit = self.server.options.receive_unit_limit
        return super().max_message_size if limit is None else limit

    def check_origin(self, origin: str) -> bool:
        return self.server.origin_allowed(origin)

    def get_compression_options(self) -> None:
        """No permessage-deflate: :class:`~signalr.tornado.ws_writer.WebSocketPeer` writes uncompressed frames itself."""
        return None

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if type(protocol) is tornado.websocket.WebSocketProtocol13:
            # Same state and construction, leaner frame reader (see HubWebSocketProtocol).
            protocol.__class__ = HubWebSocketProtocol
        return protocol

    async def get(self, *args: Any, **kwargs: Any) -> None:
        # SSE detection comes before WebSocket detection, as in ASP.NET.
        if "text/event-stream" in self.request.headers.get("Accept", ""):
            await self._server_sent_events()
        elif self.request.headers.get("Upgrade", "").lower() == "websocket":
            await self._websocket(*args, **kwargs)
        else:
            await self._long_poll()

    # -- shared --------------------------------------------------------------------------------

    async def _authenticate(self) -> Mapping[str, str] | None:
        """Read the query, record the request's info and user; None (answered 401) when refused."""
        query = query_arguments(self)
        self._info = request_info(self, query)
        ok, self._user = await self._user_or_401(self._info)
        return query if ok else None

    async def _attach(self, transport: HttpTransportType) -> HttpConnection | None:
        """Authenticate, then find the ``id=`` connection and attach ``transport``; None once answered."""
        query = await self._authenticate()
        return None if query is None else self._lookup(query, transport)

    def _lookup(self, query: Mapping[str, str], transport: HttpTransportType) -> HttpConnection | None:
        """Find the connection for ``id=`` and attach ``transport``; on failure answer and return None."""
        connection = self._connection_of(query)
        if connection is None:
            return None
        if transport not in self.server.options.transports:
            self._text(404, f"{transport} transport not supported by this end point type")
            return None
        return self._activate(connection, transport)

    def _activate(self, connection: HttpConnection, transport: HttpTransportType) -> HttpConnection | None:
        activation, serial = connection.activate(transport)
        if activation is Activation.CONFLICT:
            self._text(409, "Connection already active")
            return None
        if activation is Activation.WRONG_TRANSPORT:
            self._text(400, "Cannot change transports mid-connection")
            return None
        if activation is Activation.GONE:
            self._text(404, "No Connection with that ID")
            return None
        self._connection, self._serial, self._activation, self._mode = connection, serial, activation, transport
        return connection

    def _start_if_first(self) -> None:
        assert self._connection is not None and self._info is not None
        if self._activation is Activation.STARTED:
            self.server.start_application(self._connection, self._info, self._user)
        elif self._activation is Activation.REATTACHED and self._connection.on_reattach is not None:
            self._connection.on_reattach()

    def on_close(self) -> None:
        super().on_close()
        connection = self._connection
        if self._gone is not None:
            self._gone.set()
        if self._guard is not None:
            self._guard.cancel()
        if connection is None or not connection.is_current(self._serial):
            return
        if self._mode is HttpTransportType.WEBSOCKETS:
            if self._writer is not None:
                self._writer.stop()
            # Only an abrupt drop (no close frame) of a stateful connection may be resumed.
            if connection.reconnect_expected and self.close_code is None and not connection.outbox.closed:
                log.info("websocket of %s dropped; awaiting reconnect", connection.connection_id)
                connection.deactivate(self._serial, self.server.clock())
                return
            self.server.connections.remove(connection)
        elif self._mode is HttpTransportType.SERVER_SENT_EVENTS:
            self.server.connections.remove(connection)

    # -- flow control ------------------------------------------------------------------------------

    def _write_guard(self, stream: IOStream, *, on_overflow: Any) -> WriteGuard:
        options = self.server.options
        return WriteGuard(
            stream,
            limit=options.maximum_send_buffer_size,
            timeout=options.transport_send_timeout,
            on_overflow=on_overflow,
            on_stall=lambda: self._abandon(stream),
        )

    def _abandon(self, stream: IOStream) -> None:
        """A write stalled: end the connection and drop the socket, unsent bytes and all."""
        connection = self._connection
        if connection is not None:
            log.warning(
                "connection %s: no bytes reached the client for %ss; aborting",
                connection.connection_id,
                self.server.options.transport_send_timeout,
            )
            if connection.is_current(self._serial):
                self.server.connections.remove(connection)
        stream.close()

    def _refuse_slow_websocket(self) -> None:
        """Over the byte limit: close with 1008 (behind the backlog, for a client that catches up)
        and end the connection now, so nothing more is queued for it."""
        connection = self._connection
        assert connection is not None
        log.warning("connection %s is not reading: closing it (1008)", connection.connection_id)
        self.close(CLOSE_POLICY_VIOLATION, "Client is not reading fast enough")
        if connection.is_current(self._serial):
            self.server.connections.remove(connection)

    def _refuse_slow_event_stream(self, stream: IOStream) -> None:
        """Over the byte limit: the hub's Close message with an error ends the stream; the socket is
        dropped if the client has not read up to it within the close timeout."""
        connection = self._connection
        assert connection is not None
        log.warning("connection %s is not reading: closing it", connection.connection_id)
        session = self.server.sessions.get(connection.connection_id)
        if session is not None:
            session.abort(error=CONNECTION_ERROR, allow_reconnect=True)
        elif connection.is_current(self._serial):
            self.server.connections.remove(connection)
        everything = stream.write(b"")
        asyncio.get_running_loop().call_later(
            self.server.options.close_timeout, lambda: None if everything.done() else stream.close()
        )

    # -- WebSockets ------------------------------------------------------------------------------

    async def _websocket(self, *args: Any, **kwargs: Any) -> None:
        origin = self.request.headers.get("Origin")
        if origin and not self.server.origin_allowed(origin) and not _same_host(origin, self.request.host):
            self._text(403, "Cross origin websockets not allowed")
            return
        query = await self._authenticate()
        if query is None:
            return
        if "id" not in query:
            if HttpTransportType.WEBSOCKETS not in self.server.options.transports:
                self._text(404, "WebSockets transport not supported by this end point type")
                return
            # Skip negotiation: the connection is born here (signalrcore's ``connectionId=`` is ignored).
            connection = self.server.connections.create(negotiate_version=None, stateful_reconnect=False)
            if self._activate(connection, HttpTransportType.WEBSOCKETS) is None:
                return
        elif self._lookup(query, HttpTransportType.WEBSOCKETS) is None:
            return
        await super().get(*args, **kwargs)
        connection = self._connection
        if connection is not None and self.get_status() != 101 and connection.is_current(self._serial):
            # The upgrade itself failed (bad headers): do not leave the connection attached.
            if self._activation is Activation.STARTED:
                self.server.connections.remove(connection)
            else:
                connection.deactivate(self._serial, self.server.clock())

    def open(self, *args: Any, **kwargs: Any) -> None:
        connection = self._connection
        assert connection is not None
        self.set_nodelay(True)
        assert self.ws_connection is not None
        stream = self.ws_connection.stream
        self._guard = self._write_guard(stream, on_overflow=self._refuse_slow_websocket)
        peer = WebSocketPeer(self, self._guard)
        self._writer = websocket.WebSocketWriter(connection, peer, self._serial)
        self._writer.start()

        def abort() -> None:
            if self._writer is not None:
                self._writer.stop()
            self.close(websocket.CLOSE_NORMAL)

        connection.abort_transport = abort
        self._start_if_first()
        self._release_request()

    def _release_request(self) -> None:
        """After the upgrade, let go of Tornado's objects for the HTTP request (its two connection
        objects, the finished task of the server connection's loop, the parsed headers and query):
        nothing reads them again (the hub has its own :class:`RequestInfo`), and a WebSocket that
        waits for hours would keep them all, about 2 KiB of every idle client. The same for the
        handler's own response headers (the 101 is out) and its template namespace (none is rendered)."""
        request = self.request
        request.connection = None
        request.server_connection = None
        request.headers = _NO_HEADERS
        request.arguments = request.query_arguments = request.body_arguments = {}
        self._headers = _NO_HEADERS
        self.ui = None  # Tornado's own _break_cycles does this when the connection closes

    def end_connection(self) -> None:
        """The reader refused the client's input (a message too large): end the connection now,
        while the socket lingers until the close frame has reached the client."""
        connection = self._connection
        if connection is not None and connection.is_current(self._serial):
            self.server.connections.remove(connection)

    def on_message(self, message: str | bytes) -> asyncio.Future[None] | None:
        connection = self._connection
        if connection is not None and connection.is_current(self._serial):
            inbox = connection.inbox
            inbox.feed(message.encode("utf-8") if isinstance(message, str) else message)
            # While the hub has this much waiting, the reader reads nothing more (see ws_reader).
            return inbox.until_below(inbox.limit)
        return None

    # -- Server-Sent Events ----------------------------------------------------------------------

    async def _server_sent_events(self) -> None:
        connection = await self._attach(HttpTransportType.SERVER_SENT_EVENTS)
        if connection is None:
            return
        for name, value in sse.SSE_HEADERS:
            self.set_header(name, value)
        self._gone = asyncio.Event()
        socket: IOStream = self.request.connection.stream  # type: ignore[attr-defined]
        self._guard = self._write_guard(socket, on_overflow=lambda: self._refuse_slow_event_stream(socket))
        stream = asyncio.ensure_future(sse.run_stream(connection, self._write_flush, self._serial))
        connection.abort_transport = stream.cancel
        self._start_if_first()
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({stream, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            stream.cancel()
        if stream.done() and not stream.cancelled() and stream.exception() is not None:
            log.debug("sse stream of %s ended: %r", connection.connection_id, stream.exception())
        if connection.is_current(self._serial):
            self.server.connections.remove(connection)
        if not self._gone.is_set():
            with contextlib.suppress(StreamClosedError):
                self.finish()

    async def _write_flush(self, data: bytes) -> None:
        # Not waiting for the flush keeps the outbox drained, so everything unsent sits in the
        # socket's queue, where the guard sees it.
        self.write(data)
        flushed = self.flush()
        if not flushed.done():
            assert self._guard is not None
            self._guard.backed_up(flushed, len(data))
        elif flushed.exception() is not None:
            raise flushed.exception()  # type: ignore[misc]

    # -- Long Polling ------------------------------------------------------------------------------

    async def _long_poll(self) -> None:
        connection = await self._attach(HttpTransportType.LONG_POLLING)
        if connection is None:
            return
        for name, value in long_polling.NO_CACHE_HEADERS:
            self.set_header(name, value)
        self._gone = asyncio.Event()
        connection.abort_transport = self._gone.set
        first = self._activation is Activation.STARTED
        self._start_if_first()
        response = await long_polling.poll(
            connection, first=first, timeout=self.server.options.long_poll_timeout, superseded=self._gone
        )
        if response.closed:
            self.server.connections.remove(connection)
        else:
            connection.deactivate(self._serial, self.server.clock())
        self.set_status(response.status)
        if response.status != 204:
            self.set_header("Content-Type", response.content_type)
            self.write(response.body)
        socket: IOStream = self.request.connection.stream  # type: ignore[attr-defined]
        with contextlib.suppress(StreamClosedError):
            sent = self.finish()
            if not sent.done():
                self._guard = self._write_guard(socket, on_overflow=lambda: self._abandon(socket))
                self._guard.backed_up(sent, len(response.body))

#: What a released request's headers read as (see :meth:`HubHandler._release_request`); never written.
_NO_HEADERS = tornado.httputil.HTTPHeaders()


def _same_host(origin: str, host: str) -> bool:
    return urlsplit(origin).netloc.lower() == host.lower()
