"""The HTTP edge: Tornado's server with time limits, connection caps and JSON answers for every refusal.

Tornado's own mechanisms do the enforcing where they are cheap (``HTTP1ConnectionParameters``: the head
size); this module adds the rest, in the three places its server lets a subclass in:

* :meth:`EdgeServer.handle_stream` counts connections per client and in total (the ``--processes``
  workers' handed-over sockets come through :meth:`EdgeServer.serve_socket`, so they count too) and
  answers connections over a cap with 503;
* :meth:`EdgeServer.start_request` gives each connection its deadline for the next request head (the
  headers timeout for a new connection, the keep-alive timeout for a kept-alive one), and wraps each
  request in :class:`_EdgeRequest`, which sets the body's deadline, refuses long URLs and large bodies with
  JSON before a route runs and tells :class:`InflightRequests` about requests whose client left. One
  sweep a fraction of a second closes the connections past their deadlines: Tornado's own header and
  body timeouts arm a timer, a task and two futures around every read of every request, which cost the
  admission path more than anything else at the edge;
* :class:`gateway.http.connections.EdgeStream` (each connection's IOStream) turns the few answers Tornado
  writes or skips itself into JSON answers, and lingers when it closes under a client still sending.

The rules (limits, caps, response bytes) live in :mod:`gateway.http.edge_rules`.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.iostream

from gateway.http.edge_rules import (
    BODY_TOO_LARGE,
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    TOO_MANY_FROM_CLIENT,
    ConnectionCaps,
    EdgeError,
    DEFAULT_IPV6_PREFIX,
    client_key,
    error_response,
    head_error,
)
from gateway.background import Periodic, TaskSet
from gateway.http.connections import MAX_LINGERING, EdgeStream, close_now, linger
from gateway.http.inflight import InflightRequests
from gateway.model.jsonutil import dumps
from gateway.config.settings import LimitsSettings

log = logging.getLogger("gateway.http.edge")

#: Refusals are logged at most once per this many seconds, with a count: a flood must not flood the log.
REFUSAL_LOG_INTERVAL_SECONDS = 60.0
#: Tornado's own body limit, kept out of the way: it refuses with a bare 400 before the body is read,
#: while :class:`_EdgeRequest` counts the bytes and answers 413 in JSON (IOStream buffers stay bounded
#: by the read chunk size).
_TORNADO_BODY_LIMIT = 2**62
#: The longest a deadline may be enforced late (shorter when a timeout is configured shorter).
SWEEP_SECONDS = 1.0
#: Files a process needs besides its client connections (Redis, the platform, listeners, databases, logs).
_OTHER_FILES = 100


class EdgeServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer with the gateway's ``Limits`` and edge answers (see the module docstring).

    :param limits: the timeouts and caps.
    :param inflight: told when a request's client leaves before the request was fully received.
    :param ipv6_prefix_length: bits of an IPv6 peer address that count as one client for the per-client cap.
    """

    def initialize(  # type: ignore[override]
        self, request_callback: Any, *, limits: LimitsSettings, inflight: InflightRequests,
        ipv6_prefix_length: int = DEFAULT_IPV6_PREFIX, **kwargs: Any
    ) -> None:
        self.ipv6_prefix_length = ipv6_prefix_length
        # No Tornado timeouts: the deadlines of the streams below do their work for a fraction of the cost.
        super().initialize(request_callback, max_header_size=MAX_HEAD_BYTES, max_body_size=_TORNADO_BODY_LIMIT,
                           **kwargs)
        # Tornado waits for every request head with a timeout of its own even when none is configured (an
        # hour): a future, a chained callback and a timer per request, which the deadlines make redundant.
        self.conn_params.header_timeout = None
        self.limits = limits
        self._headers_timeout = limits.request_headers_timeout_seconds
        self._keep_alive_timeout = limits.keep_alive_timeout_seconds
        self._body_timeout = limits.request_body_timeout_seconds
        self._streams: set[EdgeStream] = set()
        #: The streams the sweep looks at: every one that had a deadline since the sweep last found it
        #: without one (a WebSocket, whose deadline ends with its upgrade, drops out after one sweep:
        #: tens of thousands of waiting clients cost the sweep nothing).
        self._timed: set[EdgeStream] = set()
        self._sweeper: Periodic | None = None
        shortest = min(t for t in (limits.request_headers_timeout_seconds, limits.keep_alive_timeout_seconds,
                                   limits.request_body_timeout_seconds))
        #: A deadline is enforced at most this late.
        self.sweep_interval = min(SWEEP_SECONDS, max(shortest / 4, 0.01))
        self.caps = ConnectionCaps(total=limits.max_connections, per_client=limits.max_connections_per_ip)
        self.inflight = inflight
        # Bounded: a flood of refused connections must not hold sockets for the linger time each.
        self._lingering = TaskSet("lingering close", log=log, limit=MAX_LINGERING)
        self._refusals = _RefusalLog()
        #: Set by :meth:`stop`: no connection goes on to another request.
        self.stopping = False

    def handle_stream(self, stream: tornado.iostream.IOStream, address: Any) -> None:
        # TCPServer made a plain IOStream that has not been used yet; the connection gets an EdgeStream.
        if isinstance(stream, EdgeStream):
            super().handle_stream(stream, address)
        else:
            self.serve_socket(stream.socket, address)

    def serve_socket(self, sock: socket.socket, address: Any, *, unread: bytes = b"") -> None:
        """Serve a connected client socket (one accepted here, or handed over by the ``--processes`` front
        or another worker, with ``unread``: bytes of it read elsewhere and not yet served)."""
        key = client_key(address[0], self.ipv6_prefix_length) if isinstance(address, tuple) and address else ""
        refusal = self.caps.admit(key)
        if refusal is not None:
            self._refusals.note(refusal, key)
            if not self._lingering.spawn(linger(sock, error_response(refusal))):
                close_now(sock, error_response(refusal))
            return
        stream = EdgeStream(sock, on_closed=partial(self._closed, key), linger=self._linger_socket, unread=unread,
                            max_buffer_size=self.max_buffer_size, read_chunk_size=self.read_chunk_size)
        self._streams.add(stream)
        if self._sweeper is None:  # started with the first connection, inside the running loop
            self._sweeper = Periodic(self._sweep, interval=self.sweep_interval, name="connection deadlines", log=log)
            self._sweeper.start()
        super().handle_stream(stream, address)

    def _closed(self, key: str, stream: EdgeStream) -> None:
        self._streams.discard(stream)
        self._timed.discard(stream)
        self.caps.release(key)

    async def _sweep(self) -> None:
        """Close the connections past their deadlines (see the module docstring)."""
        now = time.monotonic()
        timed = self._timed
        for stream in list(timed):
            deadline = stream.deadline
            if deadline is None or stream.closed():
                timed.discard(stream)  # it gets a deadline again only in start_request, which adds it back
            elif now >= deadline:
                timed.discard(stream)
                stream.deadline = None
                stream.close()  # the request's reader sees the stream closed: no answer, as nginx does

    def stop(self) -> None:
        """Stop accepting, and let no connection serve another request (at shutdown, before the hub tells its
        clients to reconnect: a load balancer keeps connections to this instance open, and a reconnect's
        negotiate on one of them would get a connection of an instance that is going away).

        A connection waiting for its next request closes now; one with a request under way closes once its
        response is out; a request whose head arrives from now on is answered with ``Connection: close``."""
        super().stop()
        self.stopping = True
        # Read by every connection of this server when a request head arrives (Tornado's own keep-alive
        # decision), so the answer tells the client or proxy not to reuse the connection.
        self.conn_params.no_keep_alive = True
        self.close_idle_connections()

    def close_idle_connections(self) -> int:
        """Close every kept-alive connection that waits for its next request (at shutdown, before the
        others are told to go): a proxy or client must not send a new request here on one of them (a
        negotiate would hand out a connection of an instance that is going away). How many it closed."""
        idle = [stream for stream in self._streams if stream.idle]
        for stream in idle:
            stream.close()
        return len(idle)

    async def close_all_connections(self) -> None:
        await super().close_all_connections()
        if self._sweeper is not None:
            await self._sweeper.stop()
            self._sweeper = None

    def _linger_socket(self, sock: socket.socket, on_closed: Callable[[], None]) -> None:
        # The connection still counts against the caps while it lingers: it still holds a file.
        if not self._lingering.spawn(linger(sock, None), on_done=on_closed):
            close_now(sock, None)
            on_closed()

    def start_request(self, server_conn: object,
                      request_conn: tornado.httputil.HTTPConnection) -> tornado.httputil.HTTPMessageDelegate:
        # Every connection of this server is an EdgeStream's (serve_socket makes them): on the per-request
        # path, no checks for what cannot happen.
        stream: EdgeStream = request_conn.stream  # type: ignore[attr-defined]
        if self.stopping and stream.requests_started:
            # A request that was under way when the server stopped has been answered (without
            # ``Connection: close``, which Tornado decided when its head came): close before a proxy
            # reuses the connection.
            stream.close()
        # The next head is due within the headers timeout on a new connection, the keep-alive timeout on
        # one that already served a request (this is called when the connection starts waiting).
        stream.deadline = time.monotonic() + (self._keep_alive_timeout if stream.requests_started
                                              else self._headers_timeout)
        if not stream.closed():  # Tornado starts one more request after closing a connection it answered
            self._timed.add(stream)
        stream.requests_started += 1
        stream.response_started = False
        stream.between_requests = True
        return _EdgeRequest(request_conn, stream, super().start_request(server_conn, request_conn), self.inflight,
                            self._body_timeout)

    async def close_lingering(self) -> None:
        """Close the connections still lingering (at shutdown)."""
        await self._lingering.cancel()


class _EdgeRequest(tornado.httputil.HTTPMessageDelegate):
    """One request on its way to the application, refused here when its head or body breaks a limit."""

    __slots__ = ("_conn", "_stream", "_inner", "_inflight", "_body_timeout", "_forwarded", "_answered", "_received")

    def __init__(self, conn: tornado.httputil.HTTPConnection, stream: EdgeStream,
                 inner: tornado.httputil.HTTPMessageDelegate, inflight: InflightRequests, body_timeout: float) -> None:
        self._conn = conn
        self._stream = stream
        self._inner = inner
        self._inflight = inflight
        self._body_timeout = body_timeout
        self._forwarded = False  # the application has seen the head
        self._answered = False  # the edge answered; nothing more goes to the application
        self._received = 0

    def headers_received(self, start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
                         headers: tornado.httputil.HTTPHeaders) -> Awaitable[None] | None:
        assert isinstance(start_line, tornado.httputil.RequestStartLine)
        self._stream.between_requests = False
        length = headers.get("Content-Length")
        # The head is in. A body, if one comes, is due within the body timeout; without one (a GET, or a
        # WebSocket upgrade) the connection owes nothing until its response is out.
        has_body = (length is not None and length != "0") or "Transfer-Encoding" in headers
        self._stream.deadline = time.monotonic() + self._body_timeout if has_body else None
        error = head_error(start_line.path, length)
        if error is not None:
            self._answer(error, head_only=start_line.method == "HEAD")
            return None
        self._forwarded = True
        return self._inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._answered:
            return None
        self._received += len(chunk)
        if self._received > MAX_BODY_BYTES:  # a chunked body (a declared length was checked with the head)
            self._inner.on_connection_close()  # the application stops waiting for the rest
            self._inflight.finished(self._conn)
            self._answer(BODY_TOO_LARGE, head_only=False)
            return None
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        self._stream.deadline = None  # the whole request is in
        if not self._answered:
            self._inner.finish()

    def on_connection_close(self) -> None:
        # Called only while the request is being received: no handler will finish it.
        if self._forwarded and not self._answered:
            self._inner.on_connection_close()
        self._inflight.finished(self._conn)

    def _answer(self, error: EdgeError, *, head_only: bool) -> None:
        self._answered = True
        if self._stream.response_started:
            self._stream.close()  # the application's response is under way: closing is all that is left
            return
        payload = dumps({"message": error.message}).encode()
        headers = tornado.httputil.HTTPHeaders({
            "Content-Type": "application/json; charset=utf-8",
            "Content-Length": str(len(payload)),
            "Cache-Control": "no-store",
            "Connection": "close",
        })
        if error.retry_after is not None:
            headers["Retry-After"] = str(error.retry_after)
        start = tornado.httputil.ResponseStartLine("HTTP/1.1", error.status,
                                                   tornado.httputil.responses.get(error.status, "Error"))
        self._conn.write_headers(start, headers, None if head_only else payload)
        # The body is not read: Tornado closes the connection once the answer is sent.
        self._conn.finish()


class _RefusalLog:
    """Logs refused connections: the first at once, then one line with a count per interval."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL_SECONDS) -> None:
        self._interval = interval
        self._next_at = 0.0
        self._untold = 0

    def note(self, refusal: EdgeError, key: str) -> None:
        now = asyncio.get_running_loop().time()
        self._untold += 1
        if now >= self._next_at:
            which = "Limits.MaxConnectionsPerIp" if refusal is TOO_MANY_FROM_CLIENT else "Limits.MaxConnections"
            log.warning("refused %d connection(s) over %s (latest from %s) in the last %.0f s",
                        self._untold, which, key or "a local socket", self._interval)
            self._untold = 0
            self._next_at = now + self._interval


def open_file_limit_warning(limits: LimitsSettings) -> str | None:
    """A warning when ``Limits.MaxConnections`` cannot be reached under this process's open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if not limits.max_connections or soft == resource.RLIM_INFINITY:
        return None
    if limits.max_connections + _OTHER_FILES <= soft:
        return None
    return (f"Limits.MaxConnections is {limits.max_connections} but this process may open only {soft} files "
            "(sockets included), so connections beyond that fail to be accepted: raise the limit (ulimit -n, "
            "or LimitNOFILE= in a systemd unit) or lower Limits.MaxConnections")
