"""At shutdown the edge closes the kept-alive connections that wait for a request, and only those: a load
balancer must not send a new request (a negotiate) to an instance that is about to tell its hub clients to
reconnect elsewhere, and requests under way, or half sent, are not cut."""

from __future__ import annotations

import asyncio
import socket

import tornado.web

from gateway.config.settings import LimitsSettings
from gateway.http.edge import EdgeServer
from gateway.http.inflight import InflightRequests

TIMEOUT = 5.0


class _Slow(tornado.web.RequestHandler):
    entered: asyncio.Event
    release: asyncio.Event

    async def get(self) -> None:
        self.entered.set()
        await self.release.wait()
        self.write("slow")


class _Fast(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("fast")


async def _served(server: EdgeServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    client, server_side = socket.socketpair()
    server_side.setblocking(False)
    server.serve_socket(server_side, ("127.0.0.1", 1))
    return await asyncio.open_connection(sock=client)


async def _head_and_body(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head.lower(), await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


async def _response(reader: asyncio.StreamReader) -> bytes:
    return (await _head_and_body(reader))[1]


async def _kept_alive_idle(server: EdgeServer, count: int) -> None:
    """Until ``count`` connections wait for their next request (a few loop turns after a response)."""
    for _ in range(100):
        if sum(stream.idle for stream in server._streams) == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never {count} idle connections")


async def test_only_connections_waiting_for_a_request_are_closed() -> None:
    _Slow.entered, _Slow.release = asyncio.Event(), asyncio.Event()
    server = EdgeServer(tornado.web.Application([(r"/slow", _Slow), (r"/fast", _Fast)]), limits=LimitsSettings(),
                        inflight=InflightRequests())
    kept, busy, partial, fresh = [await _served(server) for _ in range(4)]
    try:
        kept[1].write(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        assert await _response(kept[0]) == b"fast"  # and the connection is kept alive
        busy[1].write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        partial[1].write(b"GET /fast HTTP/1.1\r\nHo")
        await asyncio.wait_for(_Slow.entered.wait(), TIMEOUT)
        await _kept_alive_idle(server, 2)
        # The kept-alive one and the fresh one; not the one with a request under way, nor the one with
        # half a head (in the server's buffer or still in the socket).
        assert server.close_idle_connections() == 2
        assert await asyncio.wait_for(kept[0].read(), TIMEOUT) == b""
        assert await asyncio.wait_for(fresh[0].read(), TIMEOUT) == b""
        _Slow.release.set()
        assert await _response(busy[0]) == b"slow"
        partial[1].write(b"st: h\r\n\r\n")
        assert await _response(partial[0]) == b"fast"
    finally:
        for _, writer in (kept, busy, partial, fresh):
            writer.close()
        await server.close_all_connections()


async def test_after_stop_no_connection_serves_another_request() -> None:
    """``stop()`` closes the waiting connections at once; the one whose request was under way answers it and
    then closes; a request whose head comes after the stop is answered with ``Connection: close``. So a
    proxy never sends a negotiate to a stopping instance on a connection it kept."""
    _Slow.entered, _Slow.release = asyncio.Event(), asyncio.Event()
    server = EdgeServer(tornado.web.Application([(r"/slow", _Slow), (r"/fast", _Fast)]), limits=LimitsSettings(),
                        inflight=InflightRequests())
    kept, busy, partial = [await _served(server) for _ in range(3)]
    try:
        for reader, writer in (kept, busy):
            writer.write(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
            assert await _response(reader) == b"fast"
        busy[1].write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        partial[1].write(b"GET /fast HTTP/1.1\r\nHo")
        await asyncio.wait_for(_Slow.entered.wait(), TIMEOUT)
        await _kept_alive_idle(server, 1)

        server.stop()
        assert await asyncio.wait_for(kept[0].read(), TIMEOUT) == b""
        _Slow.release.set()
        assert await _response(busy[0]) == b"slow"
        assert await asyncio.wait_for(busy[0].read(), TIMEOUT) == b""  # closed right after its answer
        partial[1].write(b"st: h\r\n\r\n")
        head, body = await _head_and_body(partial[0])
        assert body == b"fast" and b"connection: close" in head
        assert await asyncio.wait_for(partial[0].read(), TIMEOUT) == b""
    finally:
        for _, writer in (kept, busy, partial):
            writer.close()
        await server.close_all_connections()


async def test_the_deadline_sweep_looks_only_at_connections_that_owe_something() -> None:
    """A connection with no deadline (a request being answered; a WebSocket for its whole life) leaves the
    sweep's set at the next sweep, and comes back when it waits for its next request: tens of thousands of
    waiting hub clients cost the sweep nothing."""
    _Slow.entered, _Slow.release = asyncio.Event(), asyncio.Event()
    server = EdgeServer(tornado.web.Application([(r"/slow", _Slow), (r"/fast", _Fast)]), limits=LimitsSettings(),
                        inflight=InflightRequests())
    busy, waiting = [await _served(server) for _ in range(2)]
    try:
        await _kept_alive_idle(server, 2)
        assert len(server._timed) == 2  # both owe their first request head
        busy[1].write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.wait_for(_Slow.entered.wait(), TIMEOUT)
        await server._sweep()
        (stream,) = server._timed
        assert stream.idle  # only the one still owing its head
        _Slow.release.set()
        assert await _response(busy[0]) == b"slow"
        await _kept_alive_idle(server, 2)
        await server._sweep()
        assert len(server._timed) == 2  # the answered one owes its next head within the keep-alive timeout
        # A connection closed after its answer is not kept for the sweep (Tornado starts one more request
        # on it after closing it).
        closing = await _served(server)
        closing[1].write(b"GET /fast HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        assert await _response(closing[0]) == b"fast"
        assert await asyncio.wait_for(closing[0].read(), TIMEOUT) == b""
        await _kept_alive_idle(server, 2)
        assert len(server._timed) == 2 and all(not stream.closed() for stream in server._timed)
        closing[1].close()
    finally:
        for _, writer in (busy, waiting):
            writer.close()
        await server.close_all_connections()
