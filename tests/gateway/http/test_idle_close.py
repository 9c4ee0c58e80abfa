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


async def _response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


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
        for _ in range(100):  # until the kept-alive connection's server loop waits again (a few loop turns)
            if sum(stream.idle for stream in server._streams) == 2:
                break
            await asyncio.sleep(0)
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
