"""A client that stops reading is disconnected instead of being buffered for without bound.

Real server, real sockets: the stalled clients are raw TCP sockets with a tiny receive buffer that
stop reading after the upgrade (or the SSE headers). Broadcasts go to them and to a healthy client,
which must keep receiving every message while the stalled one backs up.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from typing import Any

from tests.harness.signalr_server import RS, TIMEOUT, JsonWs, RawSse, Tracked, raw_websocket, read_ws_frame, running

LIMIT = 64 * 1024
PAYLOAD = "x" * 200_000
# Far more than the limit plus both kernels' socket buffers (tcp_wmem tops out at a few MiB).
MAX_ROUNDS = 80


class StalledWebSocket:
    """A raw WebSocket client that completes the SignalR handshake and then reads nothing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, token: str) -> StalledWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive window (set before connecting) makes the server's writes back up early.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        # A small stream limit: asyncio stops pulling from the socket once 2 KiB sit unread.
        reader, writer = await raw_websocket(sock, port, token, limit=1024)
        client = cls(reader, writer)
        client.send_text(b'{"protocol":"json","version":1}' + RS.encode())
        return client

    def send_text(self, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.writer.write(bytes((0x81, 0x80 | len(payload))) + mask + masked)

    async def frames_until_close(self) -> tuple[int, int]:
        """Read what the server queued; returns (data frames seen, close code)."""
        seen = 0
        while True:
            opcode, payload = await read_ws_frame(self.reader)
            if opcode == 0x8:
                return seen, struct.unpack("!H", payload[:2])[0]
            seen += 1

    async def read_to_eof(self) -> bytes:
        return await asyncio.wait_for(self.reader.read(), TIMEOUT)

    def close(self) -> None:
        self.writer.close()


async def _broadcast_until_gone(h: Any, healthy: JsonWs, stalled_id: str) -> int:
    """Broadcast big messages; the healthy client must get each one before the next is sent."""
    gone = Tracked.ended(stalled_id)
    for round_ in range(MAX_ROUNDS):
        await h.server.context.clients.all.send("Big", round_, PAYLOAD)
        message = await healthy.next_non_ping()
        assert message is not None and message["target"] == "Big"
        assert message["arguments"][0] == round_
        if gone.done():
            return round_
    raise AssertionError(f"the stalled client was still connected after {MAX_ROUNDS} broadcasts")


async def test_a_websocket_client_that_stops_reading_is_closed_with_1008() -> None:
    Tracked.reset()
    async with running(Tracked, maximum_send_buffer_size=LIMIT) as h:
        healthy = await JsonWs.connect(h)
        healthy_id = await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)
        stalled = await StalledWebSocket.open(h.port, await h.token())
        stalled_id = await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)

        rounds = await _broadcast_until_gone(h, healthy, stalled_id)

        # The kernels' buffers absorb the first rounds; it is the limit, not a failure, that ends it.
        assert rounds >= 1
        assert await asyncio.wait_for(Tracked.ended(stalled_id), TIMEOUT) is None
        # Everything queued before the close still arrives, then the close frame with 1008.
        seen, code = await stalled.frames_until_close()
        assert code == 1008
        assert seen >= 1
        stalled.close()
        # The healthy client is untouched.
        await h.server.context.clients.all.send("After", 1)
        assert (await healthy.next_non_ping()) == {"type": 1, "target": "After", "arguments": [1]}
        assert not Tracked.ended(healthy_id).done()


async def test_a_message_larger_than_the_limit_still_reaches_a_client_that_reads() -> None:
    Tracked.reset()
    async with running(Tracked, maximum_send_buffer_size=LIMIT) as h:
        client = await JsonWs.connect(h)
        client_id = await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)
        await h.server.context.clients.all.send("Big", 0, "y" * (8 * LIMIT))
        message = await client.next_non_ping()
        assert message is not None and message["arguments"] == [0, "y" * (8 * LIMIT)]
        assert (await client.invoke("Ping"))["result"] == "pong"
        assert not Tracked.ended(client_id).done()


async def test_a_write_that_makes_no_progress_aborts_the_connection() -> None:
    Tracked.reset()
    timeout = 0.3
    # A limit this large never trips: only the stall timeout can end the connection.
    async with running(Tracked, maximum_send_buffer_size=1 << 30, transport_send_timeout=timeout) as h:
        healthy = await JsonWs.connect(h)
        healthy_id = await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)
        stalled = await StalledWebSocket.open(h.port, await h.token())
        stalled_id = await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)
        loop = asyncio.get_running_loop()

        started = loop.time()
        # 12 MiB: more than the server's largest socket send buffer (tcp_wmem) plus the client's
        # pinned receive buffer, so part of it is surely still queued in the server.
        for round_ in range(12):
            await h.server.context.clients.all.send("Big", round_, "z" * (1 << 20))
            message = await healthy.next_non_ping()
            assert message is not None and message["arguments"][0] == round_
        assert await asyncio.wait_for(Tracked.ended(stalled_id), TIMEOUT) is None
        assert loop.time() - started >= timeout

        # Aborted, not closed: the socket ends, without a close frame, once the kernel's bytes are read.
        rest = await stalled.read_to_eof()
        assert not rest.endswith(b"\x88\x02\x03\xe8")
        stalled.close()
        assert (await healthy.invoke("Ping"))["result"] == "pong"
        assert not Tracked.ended(healthy_id).done()


async def test_an_event_stream_client_that_stops_reading_gets_a_close_message_with_an_error() -> None:
    Tracked.reset()
    async with running(Tracked, maximum_send_buffer_size=LIMIT) as h:
        healthy = await JsonWs.connect(h)
        await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)
        token = await h.token()
        stalled = await RawSse.open(h, f"?id={token}")
        assert stalled.status == 200
        response = await h.fetch(f"?id={token}", method="POST", body='{"protocol":"json","version":1}' + RS)
        assert response.code == 200
        stalled_id = await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)

        await _broadcast_until_gone(h, healthy, stalled_id)

        # The stream drains what was queued, then the Close message, then ends.
        await stalled.raw_until(b":\r\n")
        events = []
        while True:
            try:
                events.append(await stalled.event())
            except EOFError:
                break
        last = json.loads(events[-1].split(RS.encode())[-2])
        assert last == {"type": 7, "error": "Connection closed with an error.", "allowReconnect": True}
        await stalled.close()
        assert (await healthy.invoke("Ping"))["result"] == "pong"
