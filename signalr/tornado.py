"""Tornado adapter: the only module of :mod:`signalr` that imports Tornado.

It turns Tornado requests into calls on the framework-neutral layers (negotiate, connection
manager, transports) and maps outcomes to the status codes of the reference §1::

    routes, server = hub_routes("/chat", ChatHub, options=HubOptions(allowed_origins=(...)))
    app = tornado.web.Application(routes)
    await server.start()
    ...
    await server.shutdown()   # Close with allowReconnect to every client
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError
from tornado.routing import URLSpec
from tornado.util import _websocket_mask

from signalr.clients import HubContext
from signalr.connection import Activation, HttpConnection, RequestInfo
from signalr.connection_manager import ConnectionManager
from signalr.hub import Hub, HubMethodTable
from signalr.hub_connection import HubConnection
from signalr.lifetime import HubLifetimeManager, InMemoryHubLifetimeManager
from signalr.negotiate import (
    NegotiateResult,
    NegotiateVersionError,
    advertised_transports,
    negotiate_error_payload,
    negotiate_payload,
    parse_bool_query,
    select_version,
)
from signalr.options import HubOptions, TransportType
from signalr.transports import long_polling, sse, websocket

log = logging.getLogger("signalr.transport")

UserProvider = Callable[[RequestInfo], Any]

_ALLOWED_HEADERS = "x-requested-with, x-signalr-user-agent, authorization, content-type"
_ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"


class HubServer:
    """One hub endpoint: options, connections, lifetime manager and running hub sessions.

    :param hub_class: the :class:`~signalr.hub.Hub` subclass to serve.
    :param options: endpoint options (defaults mirror ASP.NET).
    :param lifetime_manager: in-memory by default; pass a Redis one to scale out.
    :param user_provider: maps the connecting request to a user (``context.user``); may be async;
        raising :class:`PermissionError` refuses the request with 401.
    :param clock: monotonic time source for reaping, keep-alive and timeouts.
    """

    def __init__(
        self,
        hub_class: type[Hub],
        *,
        options: HubOptions | None = None,
        lifetime_manager: HubLifetimeManager | None = None,
        user_provider: UserProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub_class = hub_class
        self.options = options or HubOptions()
        self.lifetime = lifetime_manager or InMemoryHubLifetimeManager()
        self.methods = HubMethodTable(hub_class)
        self.clock = clock
        self.user_provider = user_provider
        self.connections = ConnectionManager(
            disconnect_timeout=self.options.disconnect_timeout,
            heartbeat_interval=self.options.heartbeat_interval,
            clock=clock,
        )
        self.context = HubContext(self.lifetime)
        self.sessions: dict[str, HubConnection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Start the lifetime manager and the heartbeat."""
        await self.lifetime.start()
        self.connections.start()

    async def shutdown(self) -> None:
        """Graceful stop: Close with ``allowReconnect`` to every client, then dispose everything."""
        sessions = list(self.sessions.values())
        for session in sessions:
            session.abort(error=None, allow_reconnect=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.options.close_timeout)
        await self.connections.stop()
        await self.lifetime.close()

    def negotiate(self, query: Mapping[str, str]) -> bytes:
        """Create a connection for a negotiate request and return the response body."""
        try:
            version = select_version(query.get("negotiateversion"))
        except NegotiateVersionError as exc:
            return negotiate_error_payload(str(exc))
        stateful = self.options.allow_stateful_reconnects and parse_bool_query(query.get("usestatefulreconnect"))
        connection = self.connections.create(negotiate_version=version, stateful_reconnect=stateful)
        return negotiate_payload(
            NegotiateResult(
                version=version,
                connection_id=connection.connection_id,
                connection_token=connection.token,
                transports=advertised_transports(self.options.transports),
                use_stateful_reconnect=stateful,
            )
        )

    async def authenticate(self, request: RequestInfo) -> Any:
        """Run the user provider; :class:`PermissionError` propagates (→ 401)."""
        if self.user_provider is None:
            return None
        user = self.user_provider(request)
        return await user if inspect.isawaitable(user) else user

    def start_application(self, connection: HttpConnection, request: RequestInfo, user: Any) -> None:
        """Start the hub session of ``connection`` (first transport attach)."""
        connection.request = request
        session = HubConnection(
            connection=connection,
            hub_class=self.hub_class,
            methods=self.methods,
            options=self.options,
            lifetime=self.lifetime,
            user=user,
            clock=self.clock,
        )
        self.sessions[connection.connection_id] = session
        task = asyncio.get_running_loop().create_task(session.run())
        task.add_done_callback(lambda _: self.sessions.pop(connection.connection_id, None))
        self.track(task)

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to a background task and log its failure."""
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection task failed", exc_info=task.exception())

    def origin_allowed(self, origin: str) -> bool:
        return origin in self.options.allowed_origins


def _query(handler: tornado.web.RequestHandler) -> dict[str, str]:
    # ASP.NET matches query keys case-insensitively; unknown keys (``_=``, ``hub=``) are ignored.
    return {k.lower(): v[-1].decode("utf-8", "replace") for k, v in handler.request.query_arguments.items() if v}


def _request_info(handler: tornado.web.RequestHandler, query: Mapping[str, str]) -> RequestInfo:
    headers = {k.lower(): v for k, v in handler.request.headers.get_all()}
    token = query.get("access_token")
    authorization = headers.get("authorization", "")
    if token is None and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    return RequestInfo(headers=headers, remote_ip=handler.request.remote_ip, query=dict(query), access_token=token)


class _HubRequestMixin(tornado.web.RequestHandler):
    """CORS on every response (errors included), preflights, and no XSRF for hub endpoints."""

    server: HubServer

    def initialize(self, server: HubServer) -> None:  # type: ignore[override]
        self.server = server
        # Tornado applies default headers before initialize() runs; redo them now that we know
        # the allowed origins (error responses call them again via clear()).
        self.set_default_headers()

    def set_default_headers(self) -> None:
        server = getattr(self, "server", None)
        if server is None:
            return
        origin = self.request.headers.get("Origin")
        self.set_header("Vary", "Origin")
        if origin and server.origin_allowed(origin):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")

    def check_xsrf_cookie(self) -> None:
        """SignalR clients never send XSRF tokens."""

    def check_trusted_origin(self, origin: str) -> bool:
        return self.server.origin_allowed(origin)

    def options(self, *args: Any) -> None:
        origin = self.request.headers.get("Origin")
        if origin and self.server.origin_allowed(origin):
            self.set_header("Access-Control-Allow-Methods", _ALLOWED_METHODS)
            requested = self.request.headers.get("Access-Control-Request-Headers")
            self.set_header("Access-Control-Allow-Headers", requested or _ALLOWED_HEADERS)
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)

    def _text(self, status: int, text: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)

    async def _user_or_401(self, info: RequestInfo) -> tuple[bool, Any]:
        try:
            return True, await self.server.authenticate(info)
        except PermissionError:
            self._text(401, "Unauthorized")
            return False, None


class NegotiateHandler(_HubRequestMixin):
    """``POST {hub}/negotiate``; any other method is 405."""

    async def post(self) -> None:
        query = _query(self)
        ok, _ = await self._user_or_401(_request_info(self, query))
        if not ok:
            return
        body = self.server.negotiate(query)
        self.set_header("Content-Type", "application/json")
        self.finish(body)


_TEXT_FIN = 0x81
_BINARY_FIN = 0x82
_READ_CHUNK = 64 * 1024
# Like Tornado's own loop: give other connections a turn after this much work (a frame counts 1 KiB).
_YIELD_AFTER = 256 * 1024
_FRAME_COST = 1024


class _HubWebSocketProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's RFC 6455 protocol with a leaner reader for the many small frames of SignalR.

    Tornado reads every frame in three ``read_bytes`` calls (header, mask, payload), each leaving
    bytes in the stream buffer, so the socket is dropped from and re-added to epoll per message:
    about a fifth of the server's CPU per Echo. This reader takes whatever the socket has and cuts
    the frames itself, with the same checks and outcomes (abort on reserved bits or bad control
    frames, close 1009 above ``websocket_max_message_size``); messages then go through Tornado's
    own ``_handle_message`` (UTF-8 check, close handshake, ping/pong).
    """

    async def _receive_frame_loop(self) -> None:
        if self._decompressor is not None:  # HubHandler negotiates no compression; keep Tornado's path
            await super()._receive_frame_loop()
            return
        try:
            buffer = b""
            work = 0
            missing = 0
            while not self.client_terminated:
                if missing > _READ_CHUNK:
                    # The rest of a big frame in one read: no quadratic re-joining of small chunks.
                    chunk = await self.stream.read_bytes(missing)
                else:
                    chunk = await self.stream.read_bytes(_READ_CHUNK, partial=True)
                buffer = buffer + chunk if buffer else chunk
                consumed = 0
                while not self.client_terminated:
                    frame = self._cut_frame(buffer, consumed)
                    if frame is False:
                        return
                    if isinstance(frame, int):
                        missing = frame
                        break
                    opcode, fin, data, consumed = frame
                    work += _FRAME_COST + len(data)
                    handled = self._on_frame(opcode, fin, data)
                    if handled is False:
                        return
                    if handled is not None:
                        await handled
                buffer = buffer[consumed:] if consumed else buffer
                self._wire_bytes_in += len(chunk)
                if work >= _YIELD_AFTER:
                    work = 0
                    await asyncio.sleep(0)
        except StreamClosedError:
            self._abort()
        finally:
            self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    def _cut_frame(self, buffer: bytes, start: int) -> tuple[int, int, bytes, int] | int | bool:
        """The frame at ``start``: (opcode, fin, unmasked payload, end); the number of bytes still
        missing when incomplete (0 if the header itself is); False to stop reading."""
        available = len(buffer) - start
        if available < 2:
            return 0
        first, second = buffer[start], buffer[start + 1]
        opcode = first & self.OPCODE_MASK
        if first & self.RSV_MASK:
            self._abort()  # an extension we did not negotiate
            return False
        length = second & 0x7F
        if opcode & 0x8 and length >= 126:
            self._abort()  # control frames carry at most 125 bytes
            return False
        offset = start + 2
        if length == 126:
            if available < 4:
                return 0
            (length,) = struct.unpack_from("!H", buffer, offset)
            offset += 2
        elif length == 127:
            if available < 10:
                return 0
            (length,) = struct.unpack_from("!Q", buffer, offset)
            offset += 8
        pending = self._fragmented_message_buffer
        if length + (len(pending) if pending is not None else 0) > self.params.max_message_size:
            self.close(1009, "message too big")
            self._abort()
            return False
        masked = second & 0x80
        end = offset + (4 if masked else 0) + length
        if end > len(buffer):
            return end - len(buffer)
        if masked:
            data = _websocket_mask(buffer[offset : offset + 4], buffer[offset + 4 : end])
        else:
            data = buffer[offset:end]
        return opcode, first & self.FIN, data, end

    def _on_frame(self, opcode: int, fin: int, data: bytes) -> Any:
        """Tornado's fragment handling; returns ``_handle_message``'s awaitable, or False to stop."""
        if opcode & 0x8:
            if not fin:
                self._abort()  # control frames must not be fragmented
                return False
        elif opcode == 0:
            if self._fragmented_message_buffer is None:
                self._abort()  # nothing to continue
                return False
            self._fragmented_message_buffer.extend(data)
            if not fin:
                return None
            opcode = self._fragmented_message_opcode
            data = bytes(self._fragmented_message_buffer)
            self._fragmented_message_buffer = None
        else:
            if self._fragmented_message_buffer is not None:
                self._abort()  # a new message before the previous one ended
                return False
            if not fin:
                self._fragmented_message_opcode = opcode
                self._fragmented_message_buffer = bytearray(data)
                return None
        return self._handle_message(opcode, data)


class _WebSocketPeer:
    def __init__(self, handler: tornado.websocket.WebSocketHandler) -> None:
        self._handler = handler

    def send(self, data: bytes, *, binary: bool) -> None:
        # Tornado's write_message wraps every frame in a Task (about a tenth of the server's CPU per
        # Echo); the frame is simple enough to build here and hand to the stream, whose own write
        # future already swallows a failure (that surfaces as on_close). Unmasked, uncompressed:
        # servers never mask and HubHandler negotiates no compression.
        protocol = self._handler.ws_connection
        if protocol is None or protocol.is_closing():
            raise tornado.websocket.WebSocketClosedError()
        first = _BINARY_FIN if binary else _TEXT_FIN
        size = len(data)
        if size < 126:
            header = bytes((first, size))
        elif size <= 0xFFFF:
            header = struct.pack("!BBH", first, 126, size)
        else:
            header = struct.pack("!BBQ", first, 127, size)
        protocol.stream.write(header + data)

    def close(self, code: int) -> None:
        self._handler.close(code)


class HubHandler(_HubRequestMixin, tornado.websocket.WebSocketHandler):
    """``{hub}``: WebSocket upgrade, SSE stream, long poll (GET), send (POST), stop (DELETE)."""

    _connection: HttpConnection | None = None
    _serial = 0
    _mode: TransportType | None = None
    _activation: Activation | None = None
    _user: Any = None
    _info: RequestInfo | None = None
    _gone: asyncio.Event | None = None
    _writer: asyncio.Task[None] | None = None

    def check_origin(self, origin: str) -> bool:
        return self.server.origin_allowed(origin)

    def get_compression_options(self) -> None:
        """No permessage-deflate: :class:`_WebSocketPeer` writes uncompressed frames itself."""
        return None

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if type(protocol) is tornado.websocket.WebSocketProtocol13:
            # Same state and construction, leaner frame reader (see _HubWebSocketProtocol).
            protocol.__class__ = _HubWebSocketProtocol
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
        query = _query(self)
        self._info = _request_info(self, query)
        ok, self._user = await self._user_or_401(self._info)
        return query if ok else None

    async def _attach(self, transport: TransportType) -> HttpConnection | None:
        """Authenticate, then find the ``id=`` connection and attach ``transport``; None once answered."""
        query = await self._authenticate()
        return None if query is None else self._lookup(query, transport)

    def _lookup(self, query: Mapping[str, str], transport: TransportType) -> HttpConnection | None:
        """Find the connection for ``id=`` and attach ``transport``; on failure answer and return None."""
        token = query.get("id")
        if token is None:
            self._text(400, "Connection ID required")
            return None
        connection = self.server.connections.get(token)
        if connection is None:
            self._text(404, "No Connection with that ID")
            return None
        if transport not in self.server.options.transports:
            self._text(404, f"{transport} transport not supported by this end point type")
            return None
        return self._activate(connection, transport)

    def _activate(self, connection: HttpConnection, transport: TransportType) -> HttpConnection | None:
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
        connection = self._connection
        if self._gone is not None:
            self._gone.set()
        if connection is None or not connection.is_current(self._serial):
            return
        if self._mode is TransportType.WEBSOCKETS:
            if self._writer is not None:
                self._writer.cancel()
            # Only an abrupt drop (no close frame) of a stateful connection may be resumed.
            if connection.reconnect_expected and self.close_code is None and not connection.outbox.closed:
                log.info("websocket of %s dropped; awaiting reconnect", connection.connection_id)
                connection.deactivate(self._serial, self.server.clock())
                return
            self.server.connections.remove(connection)
        elif self._mode is TransportType.SERVER_SENT_EVENTS:
            self.server.connections.remove(connection)

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
            if TransportType.WEBSOCKETS not in self.server.options.transports:
                self._text(404, "WebSockets transport not supported by this end point type")
                return
            # Skip negotiation: the connection is born here (signalrcore's ``connectionId=`` is ignored).
            connection = self.server.connections.create(negotiate_version=None, stateful_reconnect=False)
            if self._activate(connection, TransportType.WEBSOCKETS) is None:
                return
        elif self._lookup(query, TransportType.WEBSOCKETS) is None:
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
        peer = _WebSocketPeer(self)
        self._writer = asyncio.get_running_loop().create_task(websocket.run_writer(connection, peer, self._serial))
        self.server.track(self._writer)

        def abort() -> None:
            if self._writer is not None:
                self._writer.cancel()
            self.close(websocket.CLOSE_NORMAL)

        connection.abort_transport = abort
        self._start_if_first()

    def on_message(self, message: str | bytes) -> None:
        connection = self._connection
        if connection is not None and connection.is_current(self._serial):
            connection.inbox.feed(message.encode("utf-8") if isinstance(message, str) else message)

    # -- Server-Sent Events ----------------------------------------------------------------------

    async def _server_sent_events(self) -> None:
        connection = await self._attach(TransportType.SERVER_SENT_EVENTS)
        if connection is None:
            return
        for name, value in sse.SSE_HEADERS:
            self.set_header(name, value)
        self._gone = asyncio.Event()
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
        self.write(data)
        await self.flush()

    # -- Long Polling ------------------------------------------------------------------------------

    async def _long_poll(self) -> None:
        connection = await self._attach(TransportType.LONG_POLLING)
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
        with contextlib.suppress(StreamClosedError):
            self.finish()

    # -- send and stop ------------------------------------------------------------------------------

    def _existing_connection(self) -> HttpConnection | None:
        """The ``id=`` connection of a POST or DELETE; None once a 400 or 404 has been answered."""
        token = _query(self).get("id")
        if token is None:
            self._text(400, "Connection ID required")
            return None
        connection = self.server.connections.get(token)
        if connection is None:
            self._text(404, "No Connection with that ID")
        return connection

    async def post(self, *args: Any) -> None:
        connection = self._existing_connection()
        if connection is None:
            return None
        if connection.transport is TransportType.WEBSOCKETS:
            return self._text(405, "POST requests are not allowed for WebSocket connections.")
        async with connection.post_lock:
            connection.inbox.feed(self.request.body)
        self.set_status(200)
        self.finish()

    def delete(self, *args: Any) -> None:
        connection = self._existing_connection()
        if connection is None:
            return None
        if connection.transport is not TransportType.LONG_POLLING:
            return self._text(400, "Cannot terminate this connection using the DELETE endpoint.")
        log.debug("DELETE terminates connection %s", connection.connection_id)
        self.server.connections.remove(connection)
        self.set_status(202)
        self.finish()


def _same_host(origin: str, host: str) -> bool:
    return urlsplit(origin).netloc.lower() == host.lower()


def hub_routes(
    path: str,
    hub_class: type[Hub],
    *,
    options: HubOptions | None = None,
    lifetime_manager: HubLifetimeManager | None = None,
    user_provider: UserProvider | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[URLSpec], HubServer]:
    """URL specs for ``{path}/negotiate`` and ``{path}``, plus the :class:`HubServer` behind them.

    Call ``await server.start()`` once the loop runs and ``await server.shutdown()`` on exit.
    """
    server = HubServer(
        hub_class, options=options, lifetime_manager=lifetime_manager, user_provider=user_provider, clock=clock
    )
    path = path.rstrip("/")
    routes = [
        URLSpec(f"{path}/negotiate", NegotiateHandler, {"server": server}),
        URLSpec(path, HubHandler, {"server": server}),
    ]
    return routes, server


__all__ = ["HubHandler", "HubServer", "NegotiateHandler", "UserProvider", "hub_routes"]


def listen(routes: list[Any], port: int, *, address: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``routes`` (from :func:`hub_routes`, plus any of the caller's) on ``address:port``.

    For programs whose only web surface is a hub (the example): they get a server without importing
    Tornado themselves. Returns a function that stops listening.
    """
    server = tornado.web.Application(routes).listen(port, address=address)
    return server.stop
