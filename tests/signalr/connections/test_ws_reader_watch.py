"""Between frames, the WebSocket reader watches an idle client's socket itself (``_FrameReader._watch``):
the event loop's read callback of the socket is the reader's, not Tornado's stream handler, and a frame
that arrives is read and cut at once. These tests check that the borrowing happens, that it is given
back to Tornado whenever Tornado's path is needed (a frame larger than one read) and taken again after,
and that what Tornado's path did still happens here: a frame in pieces, several frames in one read, a
client that leaves (FIN or reset)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tornado.util import _websocket_mask

from tests.harness.signalr_server import RS, Harness, raw_websocket, read_ws_frame, running, wait_until


def _masked(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", length)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", length)
    return head + mask + _websocket_mask(mask, payload)


def _message(message: dict[str, Any]) -> bytes:
    return _masked((json.dumps(message) + RS).encode())


class _Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def results(self, count: int) -> list[object]:
        """The results of the next ``count`` completions, in order (other messages skipped)."""
        out: list[object] = []
        while len(out) < count:
            opcode, payload = await read_ws_frame(self.reader)
            assert opcode == 0x1, (opcode, payload)
            out += [m["result"] for m in map(json.loads, payload.decode().split(RS)[:-1]) if m.get("type") == 3]
        return out


def _echo(value: str) -> dict[str, Any]:
    return {"type": 1, "invocationId": value, "target": "Echo", "arguments": [value]}


@asynccontextmanager
async def _connected(h: Harness) -> AsyncIterator[_Client]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", h.port))
    client = _Client(*await raw_websocket(sock, h.port, await h.token(), limit=2**20))
    client.writer.write(_masked(b'{"protocol":"json","version":1}' + RS.encode()))
    opcode, payload = await read_ws_frame(client.reader)
    assert (opcode, payload) == (0x1, b"{}" + RS.encode())
    try:
        yield client
    finally:
        client.writer.close()


def _server_protocol() -> Any:
    gc.collect()
    (handler,) = [o for o in gc.get_objects() if type(o).__name__ == "HubHandler" and o.ws_connection is not None]
    return handler.ws_connection


def _read_callback(protocol: Any) -> Any:
    """What the event loop calls when the server side of the connection becomes readable."""
    loop = asyncio.get_running_loop()
    key = loop._selector.get_key(protocol.stream.fileno().fileno())  # type: ignore[attr-defined]
    reader_handle = key.data[0]
    return reader_handle._callback


def _watched_by_the_reader(protocol: Any) -> bool:
    callback = _read_callback(protocol)
    return getattr(callback, "__name__", "") == "_on_readable"


async def test_an_idle_socket_is_watched_by_the_reader_and_frames_are_read_at_once() -> None:
    async with running() as h, _connected(h) as client:
        protocol = _server_protocol()
        await wait_until(lambda: _watched_by_the_reader(protocol))
        client.writer.write(_message(_echo("one")))
        assert await client.results(1) == ["one"]
        assert _watched_by_the_reader(protocol)
        # Several frames in one write, and one frame in pieces: cut and handed on in order.
        client.writer.write(b"".join(_message(_echo(f"m{i}")) for i in range(5)))
        assert await client.results(5) == [f"m{i}" for i in range(5)]
        split = _message(_echo("split"))
        client.writer.write(split[:3])
        await client.writer.drain()
        await wait_until(lambda: protocol._wire_bytes_in > 0 and _watched_by_the_reader(protocol))
        before = protocol._wire_bytes_in
        await wait_until(lambda: protocol._wire_bytes_in == before)  # the three bytes are in, nothing answered
        client.writer.write(split[3:])
        assert await client.results(1) == ["split"]
        assert _watched_by_the_reader(protocol)


async def test_a_frame_larger_than_one_read_goes_through_tornado_and_the_watch_resumes() -> None:
    async with running(maximum_receive_message_size=1 << 20) as h, _connected(h) as client:
        protocol = _server_protocol()
        await wait_until(lambda: _watched_by_the_reader(protocol))
        big = "x" * 200_000
        client.writer.write(_message(_echo(big)))
        assert await client.results(1) == [big]
        client.writer.write(_message(_echo("after")))
        assert await client.results(1) == ["after"]
        await wait_until(lambda: _watched_by_the_reader(protocol))


async def test_a_client_that_leaves_while_watched_is_noticed() -> None:
    for how in ("fin", "reset"):
        async with running() as h:
            async with _connected(h) as client:
                protocol = _server_protocol()
                await wait_until(lambda: _watched_by_the_reader(protocol) and len(h.server.sessions) == 1)
                sock = client.writer.get_extra_info("socket")
                if how == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.writer.close()
                await wait_until(lambda: not h.server.sessions)
                assert protocol.stream.closed()


async def test_a_close_by_the_server_while_watched_ends_the_hub_connection() -> None:
    """Tornado's close-handshake timeout, a failed write or the hub close the stream from outside the
    reader; with no read pending, the reader must still learn of it and end the connection."""
    async with running() as h, _connected(h) as client:
        protocol = _server_protocol()
        await wait_until(lambda: _watched_by_the_reader(protocol) and len(h.server.sessions) == 1)
        protocol.stream.close()  # what Tornado's _abort does when a client never answers a close
        await wait_until(lambda: not h.server.sessions)
        assert protocol.handler.ws_connection is None  # the handler heard of the close (on_close ran)
        assert await client.reader.read() == b""  # and the client sees the connection end
