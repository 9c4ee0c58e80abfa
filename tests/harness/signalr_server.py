"""Shared helpers for the SignalR server tests: a real Tornado server on a free port and raw clients.

Everything goes over real sockets (Tornado's HTTP and WebSocket clients); waits are bounded by
timeouts instead of sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import tornado.httpclient
import tornado.httpserver
import tornado.testing
import tornado.web
import tornado.websocket

from examples.chat import ChatHub
from signalr import HubOptions
from signalr.hubs.hub import Hub
from signalr.tornado import HubServer, hub_routes

RS = "\x1e"
TIMEOUT = 5.0


class Harness:
    """A running hub endpoint at ``/chat``."""

    def __init__(self, server: HubServer, http: tornado.httpserver.HTTPServer, port: int) -> None:
        self.server = server
        self.http = http
        self.port = port
        self.base = f"http://127.0.0.1:{port}/chat"
        self.ws_base = f"ws://127.0.0.1:{port}/chat"
        self.client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        self.sockets: list[tuple[tornado.websocket.WebSocketClientConnection, Any]] = []

    async def fetch(self, path: str = "", method: str = "GET", **kwargs: Any) -> tornado.httpclient.HTTPResponse:
        kwargs.setdefault("request_timeout", TIMEOUT)
        if method in ("POST",) and "body" not in kwargs:
            kwargs["body"] = b""
        return await self.client.fetch(self.base + path, method=method, raise_error=False, **kwargs)

    async def negotiate(self, query: str = "?negotiateVersion=1") -> dict[str, Any]:
        response = await self.fetch("/negotiate" + query, method="POST")
        assert response.code == 200, response.code
        return json.loads(response.body)

    async def token(self) -> str:
        """The connection token of a new negotiation."""
        return str((await self.negotiate())["connectionToken"])

    async def websocket(
        self, query: str, headers: dict[str, str] | None = None
    ) -> tornado.websocket.WebSocketClientConnection:
        request = tornado.httpclient.HTTPRequest(self.ws_base + query, headers=headers or {})
        ws = await asyncio.wait_for(tornado.websocket.websocket_connect(request), TIMEOUT)
        self.sockets.append((ws, ws.protocol.stream))  # type: ignore[union-attr]
        return ws

    async def close_sockets(self) -> None:
        """Finish every client WebSocket's closing handshake so no socket outlives its test."""
        loop = asyncio.get_running_loop()
        for ws, stream in self.sockets:
            ws.close()
            deadline = loop.time() + TIMEOUT
            # Teardown only: the client has no public "closed" future, so watch its stream.
            while stream is not None and not stream.closed() and loop.time() < deadline:
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(hub_class: type[Hub] = ChatHub, **options: Any) -> AsyncIterator[Harness]:
    """Start ``hub_class`` at ``/chat`` with ``HubOptions(**options)``; stop it afterwards."""
    extra = {k: options.pop(k) for k in ("lifetime_manager", "clock", "user_provider") if k in options}
    routes, server = hub_routes("/chat", hub_class, options=HubOptions(**options), **extra)
    app = tornado.web.Application(routes)
    sock, port = tornado.testing.bind_unused_port()
    http = tornado.httpserver.HTTPServer(app)
    http.add_sockets([sock])
    await server.start()
    harness = Harness(server, http, port)
    try:
        yield harness
    finally:
        await harness.close_sockets()
        await server.shutdown()
        http.stop()
        await asyncio.wait_for(http.close_all_connections(), TIMEOUT)
        harness.client.close()


def frame(*messages: dict[str, Any]) -> str:
    """JSON messages as one text unit."""
    return "".join(json.dumps(m) + RS for m in messages)


def parse(text: str | bytes) -> list[dict[str, Any]]:
    """Split a text unit into JSON messages, asserting it ends on a record separator."""
    if isinstance(text, bytes):
        text = text.decode()
    assert text.endswith(RS), f"unit does not end with RS: {text!r}"
    return [json.loads(part) for part in text.split(RS)[:-1]]


async def raw_websocket(sock: socket.socket, port: int, token: str, *, limit: int = 2**16,
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Upgrade a connected non-blocking socket to a WebSocket on ``/chat?id=token`` by hand (no client
    library: the test owns every byte and every read); ``limit`` is the asyncio reader's buffer size."""
    reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /chat?id={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def read_ws_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: its opcode and payload."""
    first, second = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


class JsonWs:
    """A raw JSON-protocol WebSocket client that keeps every received message in order."""

    def __init__(self, ws: tornado.websocket.WebSocketClientConnection) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []
        self.units: list[str | bytes] = []
        self.skipped: list[dict[str, Any]] = []  # messages passed over by invoke()

    @classmethod
    async def connect(cls, harness: Harness, query: str | None = None, *, handshake: bool = True) -> JsonWs:
        if query is None:
            token = (await harness.negotiate())["connectionToken"]
            query = f"?id={token}"
        client = cls(await harness.websocket(query))
        if handshake:
            await client.send_raw('{"protocol":"json","version":1}' + RS)
            assert await client.next() == {}
        return client

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.write_message(text, binary=isinstance(text, bytes))

    async def send(self, *messages: dict[str, Any]) -> None:
        await self.send_raw(frame(*messages))

    async def next(self, timeout: float = TIMEOUT) -> dict[str, Any] | None:
        """The next message (pings included), or ``None`` when the socket closed."""
        while not self.pending:
            unit = await asyncio.wait_for(self.ws.read_message(), timeout)
            if unit is None:
                return None
            self.units.append(unit)
            self.pending.extend(parse(unit))
        return self.pending.pop(0)

    async def next_non_ping(self, timeout: float = TIMEOUT) -> dict[str, Any] | None:
        while True:
            message = await self.next(timeout)
            if message is None or message.get("type") != 6:
                return message

    async def invoke(self, target: str, *args: Any, invocation_id: str = "1") -> dict[str, Any]:
        await self.send({"type": 1, "invocationId": invocation_id, "target": target, "arguments": list(args)})
        while True:
            message = await self.next_non_ping()
            assert message is not None, "socket closed before completion"
            if message.get("type") == 3 and message.get("invocationId") == invocation_id:
                return message
            self.skipped.append(message)

    async def closed(self, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Read until the socket closes; returns the messages seen on the way."""
        seen = []
        while (message := await self.next(timeout)) is not None:
            seen.append(message)
        self.ws.close()
        return seen

    def close(self) -> None:
        self.ws.close()


class RawSse:
    """An SSE receive stream over a raw HTTP/1.0 socket (so the test can drop it at will)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: str) -> None:
        self.reader = reader
        self.writer = writer
        self.head = head
        self.buffer = b""

    @classmethod
    async def open(cls, harness: Harness, query: str) -> RawSse:
        reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
        writer.write(
            f"GET /chat{query} HTTP/1.0\r\nHost: 127.0.0.1:{harness.port}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        return cls(reader, writer, head.decode("latin-1"))

    @property
    def status(self) -> int:
        return int(self.head.split(" ", 2)[1])

    async def raw_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = await asyncio.wait_for(self.reader.read(65536), TIMEOUT)
            if not chunk:
                raise EOFError(self.buffer)
            self.buffer += chunk
        index = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:index], self.buffer[index:]
        return data

    async def event(self) -> bytes:
        """The data of the next event (``data:`` lines joined with LF)."""
        raw = await self.raw_until(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        assert all(line.startswith(b"data: ") for line in lines), raw
        return b"\n".join(line[len(b"data: ") :] for line in lines)

    async def at_eof(self) -> bool:
        rest = await asyncio.wait_for(self.reader.read(), TIMEOUT)
        self.buffer += rest
        return True

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def wait_until(predicate: Any, timeout: float = TIMEOUT) -> None:
    """Wait for server-side state that has no event of its own (bounded; fails the test on timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)


class Tracked(Hub):
    """Reports connects and disconnects to the test (the back-pressure tests wait on these)."""

    connected: asyncio.Queue[str]
    gone: dict[str, asyncio.Future[BaseException | None]]

    @classmethod
    def reset(cls) -> None:
        cls.connected = asyncio.Queue()
        cls.gone = {}

    @classmethod
    def ended(cls, connection_id: str) -> asyncio.Future[BaseException | None]:
        return cls.gone.setdefault(connection_id, asyncio.get_running_loop().create_future())

    async def on_connected(self) -> None:
        Tracked.connected.put_nowait(self.context.connection_id)

    async def on_disconnected(self, exception: BaseException | None) -> None:
        ended = Tracked.ended(self.context.connection_id)
        if not ended.done():  # a failed test may have cancelled its wait on it
            ended.set_result(exception)

    def ping(self) -> str:
        return "pong"
