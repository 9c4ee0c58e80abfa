"""A lean SignalR JSON-protocol client for the benchmarks: negotiate, WebSocket, handshake, invoke.

Thousands of these must fit in one process on a two-core machine next to the server under test,
so each connection is one :class:`asyncio.Protocol` driving the sans-I/O
:class:`websockets.client.ClientProtocol` (no reader task, no queues). Arrival times are taken with
:func:`time.perf_counter` as the bytes come off the socket, before any parsing, so the client's own
decoding cost does not leak into a measured delivery time.

Typical use::

    async with Negotiator("127.0.0.1", port, "/chat") as negotiator:
        client = await connect(negotiator)
        assert await client.invoke("Echo", "hi") == "hi"
        await client.close()
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

RECORD_SEPARATOR = b"\x1e"
HANDSHAKE = b'{"protocol":"json","version":1}' + RECORD_SEPARATOR

INVOCATION = 1
COMPLETION = 3
PING = 6
CLOSE = 7

#: ``on_invocation(client, target, arguments, arrived_at)`` for server-to-client invocations.
InvocationHandler = Callable[["HubClient", str, list[Any], float], None]


class HubError(Exception):
    """A Completion carried an error, or the connection failed before the result came."""


class HubClient(asyncio.Protocol):
    """One SignalR connection over WebSockets with the JSON hub protocol.

    :param url: ``ws://host:port/path?id=TOKEN``.
    :param on_invocation: called for every server-to-client invocation (e.g. ``Message``).
    :param index: free slot for the caller (the benchmark keeps its per-connection results by index).
    """

    __slots__ = ("_ws", "_transport", "_buffer", "_pending", "_ids", "_handshaken", "ready", "closed",
                 "on_invocation", "index")

    def __init__(self, url: str, *, on_invocation: InvocationHandler | None = None, index: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._ws = ClientProtocol(parse_uri(url), max_size=None)
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._handshaken = False
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.on_invocation = on_invocation
        self.index = index

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._ws.send_request(self._ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        arrived_at = time.perf_counter()
        self._ws.receive_data(data)
        for event in self._ws.events_received():
            if isinstance(event, Response):
                if self._ws.handshake_exc is not None:
                    self._fail(HubError(f"WebSocket upgrade refused: {self._ws.handshake_exc}"))
                else:
                    self._ws.send_text(HANDSHAKE)
            elif event.opcode in (Opcode.TEXT, Opcode.CONT, Opcode.BINARY):
                self._buffer += event.data
                self._drain_messages(arrived_at)
        self._flush()

    def eof_received(self) -> bool | None:
        self._ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(HubError(f"connection lost: {exc!r}" if exc else "connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- hub messages ----------------------------------------------------------------------------

    def _drain_messages(self, arrived_at: float) -> None:
        while (end := self._buffer.find(RECORD_SEPARATOR)) >= 0:
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            message = json.loads(raw)
            if not self._handshaken:
                self._handshaken = True
                if message.get("error"):
                    self._fail(HubError(f"handshake refused: {message['error']}"))
                elif not self.ready.done():
                    self.ready.set_result(None)
                continue
            kind = message.get("type")
            if kind == INVOCATION:
                if self.on_invocation is not None:
                    self.on_invocation(self, message["target"], message.get("arguments", []), arrived_at)
            elif kind == COMPLETION:
                future = self._pending.pop(message.get("invocationId", ""), None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(HubError(message["error"]))
                    else:
                        future.set_result(message.get("result"))
            elif kind == CLOSE:
                self._fail(HubError(f"server closed the hub connection: {message.get('error')}"))

    def send_invocation(self, target: str, *arguments: Any) -> tuple[asyncio.Future[Any], float]:
        """Send an Invocation; return the future of its result and the ``perf_counter`` time of the write."""
        if not self._handshaken or self._transport is None or self._transport.is_closing():
            raise HubError("connection is not open")
        invocation_id = str(next(self._ids))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[invocation_id] = future
        payload = {"type": INVOCATION, "invocationId": invocation_id, "target": target, "arguments": arguments}
        self._ws.send_text(json.dumps(payload, separators=(",", ":")).encode() + RECORD_SEPARATOR)
        sent_at = time.perf_counter()
        self._flush()
        return future, sent_at

    async def invoke(self, target: str, *arguments: Any) -> Any:
        """Invoke a hub method and return its result (raises :class:`HubError` on an error completion)."""
        future, _ = self.send_invocation(target, *arguments)
        return await future

    async def close(self, timeout: float = 5.0) -> None:
        """Closing handshake, then wait for the server to drop the TCP connection (abort on timeout)."""
        if self._transport is None:
            return
        if self._ws.state is State.OPEN:
            self._ws.send_close()
            self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            self._transport.abort()
            await self.closed

    def abort(self) -> None:
        """Drop the TCP connection at once (no closing handshake)."""
        if self._transport is not None:
            self._transport.abort()

    # -- plumbing --------------------------------------------------------------------------------

    def _flush(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        for chunk in self._ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()

    def _fail(self, error: HubError) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        if self._transport is not None and self._ws.state is not State.OPEN:
            self._transport.close()


class Negotiator:
    """Issues ``POST {path}/negotiate?negotiateVersion=1`` over a few keep-alive HTTP connections.

    Reusing connections keeps thousands of negotiates from leaving thousands of sockets in
    TIME_WAIT, which would exhaust loopback's ephemeral ports across repetitions.

    :param pool_size: number of keep-alive connections (and so of negotiates in flight).
    """

    def __init__(self, host: str, port: int, path: str, *, pool_size: int = 16) -> None:
        self.host, self.port, self.path = host, port, path.rstrip("/")
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(pool_size):
            self._idle.put_nowait(None)
        self._open: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Negotiator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        writers, self._open = self._open, []
        for writer in writers:
            writer.close()
        for writer in writers:
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def websocket_url(self, token: str) -> str:
        return f"ws://{self.host}:{self.port}{self.path}?id={quote(token, safe='')}"

    async def negotiate(self) -> str:
        """Return the ``connectionToken`` (``connectionId`` for version 0 servers)."""
        slot = await self._idle.get()
        try:
            if slot is None:
                slot = await asyncio.open_connection(self.host, self.port)
                self._open.append(slot[1])
            reader, writer = slot
            writer.write(
                f"POST {self.path}/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            body = await _read_response(reader)
        except BaseException:
            if slot is not None:
                slot[1].close()
                self._open.remove(slot[1])
            self._idle.put_nowait(None)
            raise
        self._idle.put_nowait(slot)
        payload = json.loads(body)
        if "error" in payload:
            raise HubError(f"negotiate refused: {payload['error']}")
        return str(payload.get("connectionToken") or payload["connectionId"])


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size + 2)
            del body[-2:]
        await reader.readuntil(b"\r\n")
    else:
        body = bytearray(await reader.readexactly(int(headers.get("content-length", "0"))))
    if status != 200:
        raise HubError(f"negotiate answered {status}: {bytes(body)[:200]!r}")
    return bytes(body)


async def connect(
    negotiator: Negotiator, *, on_invocation: InvocationHandler | None = None, index: int = 0, timeout: float = 30.0
) -> HubClient:
    """Negotiate, open the WebSocket and complete the hub handshake."""
    token = await negotiator.negotiate()
    loop = asyncio.get_running_loop()
    url = negotiator.websocket_url(token)
    _, client = await loop.create_connection(
        lambda: HubClient(url, on_invocation=on_invocation, index=index), negotiator.host, negotiator.port
    )
    try:
        await asyncio.wait_for(asyncio.shield(client.ready), timeout)
    except BaseException:
        client.abort()
        raise
    return client


__all__ = ["HubClient", "HubError", "InvocationHandler", "Negotiator", "connect"]
