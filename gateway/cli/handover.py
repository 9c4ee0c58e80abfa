"""The Tornado side of a ``--processes`` worker: serve the connections the parent passes in, and pass a
request on to the worker that holds its SignalR connection (why: :mod:`gateway.cli.supervisor`).

A request is passed on from ``find_handler``, that is once its head is parsed and before Tornado reads
its body or writes anything: the worker detaches the socket from Tornado's HTTP connection, re-serialises
the head and adds every byte Tornado buffered after it. The owner wraps the socket in a
:class:`PrefilledStream` that returns those bytes before reading the socket, so its HTTP server parses them
as if they had just arrived.
"""

from __future__ import annotations

import logging
import socket

import tornado.http1connection
import tornado.httputil
import tornado.iostream

from gateway.http.connections import PrefilledStream
from gateway.http.edge import EdgeServer
from gateway.cli.supervisor import Arrival, hand_over, owner_of

log = logging.getLogger("gateway.cli.supervisor")


def unread_bytes(stream: tornado.iostream.IOStream) -> bytes:
    """Every byte read from ``stream``'s socket (or handed in with it) and not yet consumed; the stream
    is to be closed afterwards, not read again."""
    # Tornado has no public way to take back its read buffer: read it where BaseIOStream keeps it
    # (tests/gateway/cli/test_handover.py pins it; older Tornados kept a start offset too).
    start = getattr(stream, "_read_buffer_pos", 0)
    buffered = bytes(stream._read_buffer[start : start + stream._read_buffer_size])  # type: ignore[attr-defined]
    return buffered + (stream.take_unread() if isinstance(stream, PrefilledStream) else b"")


def request_head(request: tornado.httputil.HTTPServerRequest) -> bytes:
    """The request line and headers of ``request`` as the client could have sent them."""
    lines = [f"{request.method} {request.uri} {request.version}"]
    lines.extend(f"{name}: {value}" for name, value in request.headers.get_all())
    # Tornado decoded the head as Latin-1, so encoding it back gives the client's bytes.
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Handover:
    """Worker ``index`` of ``workers``: passes requests to their owners over ``channel``.

    :param channel: this worker's end of its channel to the parent (non-blocking).
    :param instance_prefix: what this instance's tokens start with before the worker index (``Instance.Id``).
    """

    def __init__(self, index: int, workers: int, channel: socket.socket, instance_prefix: str = "") -> None:
        self.index = index
        self.instance_prefix = instance_prefix
        self.workers = workers
        self.channel = channel

    def __call__(self, request: tornado.httputil.HTTPServerRequest) -> bool:
        """Pass ``request`` on if another worker holds the connection it names; True when passed on
        (the request's connection then belongs to this worker no more)."""
        owner = owner_of(request.uri or "", self.workers, self.instance_prefix)
        if owner is None or owner == self.index:
            return False
        connection = request.connection
        assert isinstance(connection, tornado.http1connection.HTTP1Connection)
        stream = connection.detach()
        try:
            hand_over(self.channel, stream.socket, request_head(request) + unread_bytes(stream), owner)
        except OSError as exc:
            # The parent cannot take it now (its queue is full, or it is shutting down): the client
            # sees the connection close without an answer, as when a server restarts.
            log.warning("could not pass a request on to worker %d: %s; closing its connection", owner, exc)
        finally:
            stream.close()
        return True

    def serve(self, server: EdgeServer, arrival: Arrival) -> None:
        """Serve a connection the parent passed in (fresh, or handed over with its unread bytes)."""
        sock = arrival.sock
        sock.setblocking(False)
        try:
            address = sock.getpeername()
        except OSError:  # the client is already gone
            sock.close()
            return
        # Through the edge, like an accepted connection: counted against the caps, timed out alike.
        server.serve_socket(sock, address, unread=arrival.unread)
