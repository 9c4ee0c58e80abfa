"""Bounded work per connection (issue 11, section 2): a client cannot make the server parse, queue or
run more than a fixed amount of its input, nor keep it working after it left.

Real Tornado server, real sockets. The flooding clients are raw TCP sockets speaking just enough of
RFC 6455 / HTTP/1.1 to send what a well-behaved library never would (oversized frames, bodies
announced larger than they are) and to stop reading.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tornado.util import _websocket_mask

from signalr import Hub, HubOptions
from signalr.hubs.dispatcher import DISPATCH_BATCH
from tests.harness.signalr_server import RS, TIMEOUT, Harness, JsonWs, raw_websocket, read_ws_frame, running, wait_until

HANDSHAKE = ('{"protocol":"json","version":1}' + RS).encode()
PAD = "p" * 200
CLOSE_TOO_BIG = 1009


class Work(Hub):
    """Records what runs. ``block`` holds its slot until the test opens the gate."""

    gate: asyncio.Event
    blocked: asyncio.Queue[int]
    cancelled: asyncio.Queue[int]
    counted: list[int]
    running: int
    most: int
    gone: asyncio.Event

    @classmethod
    def reset(cls) -> None:
        cls.gate = asyncio.Event()
        cls.blocked = asyncio.Queue()
        cls.cancelled = asyncio.Queue()
        cls.counted = []
        cls.running = 0
        cls.most = 0
        cls.gone = asyncio.Event()

    async def block(self, n: int) -> int:
        Work.running += 1
        Work.most = max(Work.most, Work.running)
        Work.blocked.put_nowait(n)
        try:
            await Work.gate.wait()
        except asyncio.CancelledError:
            Work.cancelled.put_nowait(n)
            raise
        finally:
            Work.running -= 1
        return n

    def count(self, n: int, pad: str) -> int:
        Work.counted.append(n)
        return n

    async def on_disconnected(self, exception: BaseException | None) -> None:
        Work.gone.set()


def invocation(target: str, *args: Any, invocation_id: str | None = None) -> bytes:
    message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(args)}
    if invocation_id is not None:
        message["invocationId"] = invocation_id
    return (json.dumps(message) + RS).encode()


def count_frames(total: int, per_frame: int = 100) -> list[bytes]:
    """``Count(0..total-1)`` as non-blocking invocations, ``per_frame`` to a WebSocket message (~24 KiB)."""
    return [
        b"".join(invocation("Count", n, PAD) for n in range(start, min(start + per_frame, total)))
        for start in range(0, total, per_frame)
    ]


class RawWebSocket:
    """A WebSocket client over a raw socket: any frame header, no reading unless asked."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sent = 0

    @classmethod
    async def open(cls, port: int, token: str, *, reads: bool = True) -> RawWebSocket:
        """Connect and complete the SignalR handshake; with ``reads=False`` the client never reads
        again, not even the handshake response (as a flooding client: closing it then sends a reset)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small send buffer: once the server stops reading, the client's writes back up early.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await raw_websocket(sock, port, token)
        client = cls(reader, writer)
        if not reads:
            writer.transport.pause_reading()  # type: ignore[attr-defined]
        client.send(HANDSHAKE)
        if reads:
            assert await client.read_text() == b"{}" + RS.encode()
        return client

    @staticmethod
    def header(length: int, opcode: int = 0x1) -> bytes:
        if length < 126:
            return bytes((0x80 | opcode, 0x80 | length))
        if length < 1 << 16:
            return bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", length)
        return bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", length)

    def send(self, payload: bytes) -> None:
        mask = os.urandom(4)
        self.writer.write(self.header(len(payload)) + mask + _websocket_mask(mask, payload))

    async def send_all(self, payloads: list[bytes]) -> None:
        """Send each payload as one message, waiting whenever the socket's send buffer is full."""
        for payload in payloads:
            self.send(payload)
            await self.writer.drain()
            self.sent += len(payload)

    async def read_frame(self) -> tuple[int, bytes]:
        return await read_ws_frame(self.reader)

    async def read_text(self) -> bytes:
        opcode, payload = await self.read_frame()
        assert opcode == 0x1, (opcode, payload)
        return payload

    async def messages(self) -> list[dict[str, Any]]:
        """The messages of the next text frame that is not a lone Ping."""
        while True:
            parsed = [json.loads(part) for part in (await self.read_text()).split(RS.encode())[:-1]]
            if parsed != [{"type": 6}]:
                return [m for m in parsed if m.get("type") != 6]

    def abort(self) -> None:
        """Drop the socket; unread bytes make the kernel send a reset instead of a FIN."""
        self.writer.transport.abort()


async def _first_blocked(n: int = 0) -> None:
    assert await asyncio.wait_for(Work.blocked.get(), TIMEOUT) == n


def test_the_limits_default_to_aspnet_core_signalr_s() -> None:
    options = HubOptions()
    assert options.maximum_parallel_invocations_per_client == 1
    assert options.transport_max_buffer_size == options.application_max_buffer_size == 64 * 1024
    assert options.client_timeout_interval == 30 and options.keep_alive_interval == 15
    # One WebSocket message or POST body may carry several messages: the transport buffer is the floor.
    assert options.receive_unit_limit == 64 * 1024
    assert HubOptions(maximum_receive_message_size=1 << 20).receive_unit_limit == 1 << 20
    assert HubOptions(maximum_receive_message_size=None).receive_unit_limit is None
    with pytest.raises(ValueError, match="maximum_parallel_invocations_per_client"):
        HubOptions(maximum_parallel_invocations_per_client=0)


# -- 1. at most N invocations run; beyond that the server stops reading ---------------------------


async def test_a_flood_behind_a_running_invocation_is_left_in_the_socket() -> None:
    Work.reset()
    async with running(Work) as h:
        client = await RawWebSocket.open(h.port, await h.token())
        client.send(invocation("Block", 0, invocation_id="b"))
        await _first_blocked()

        # ~7 MiB of invocations, far more than the server may hold for one connection.
        frames = count_frames(30_000)
        flood = asyncio.ensure_future(client.send_all(frames))
        done, _ = await asyncio.wait({flood}, timeout=1.0)
        # The server stopped reading: after a second, the flood still waits in the client's own socket,
        # beyond the few hundred KiB that the kernels' buffers and the server's bounded buffers hold.
        assert not done, "the server read the whole flood while an invocation held its only slot"
        assert client.sent < 1024 * 1024, f"the server took {client.sent} bytes while it could run nothing"
        assert Work.counted == [] and Work.most == 1

        # Nothing was lost: once the slot frees, everything runs, in order, one at a time.
        Work.gate.set()
        await asyncio.wait_for(flood, 30)
        client.send(invocation("Count", -1, "", invocation_id="end"))
        results: list[dict[str, Any]] = []
        while not any(m.get("invocationId") == "end" for m in results):
            results += await client.messages()
        assert [m["invocationId"] for m in results] == ["b", "end"]
        assert Work.counted == [*range(30_000), -1]
        assert Work.most == 1
        client.abort()


async def test_the_parallel_invocation_limit_is_configurable() -> None:
    Work.reset()
    async with running(Work, maximum_parallel_invocations_per_client=2) as h:
        client = await JsonWs.connect(h)
        for n in range(3):
            await client.send({"type": 1, "invocationId": str(n), "target": "Block", "arguments": [n]})
        await _first_blocked(0)
        await _first_blocked(1)
        await client.send({"type": 1, "invocationId": "c", "target": "Count", "arguments": [7, ""]})
        # The third Block waits for a slot, and the Count behind it waits too.
        third = asyncio.ensure_future(Work.blocked.get())
        done, _ = await asyncio.wait({third}, timeout=0.3)
        third.cancel()
        assert not done and Work.counted == [] and Work.most == 2
        Work.gate.set()
        ids = {(await client.next_non_ping())["invocationId"] for _ in range(4)}  # type: ignore[index]
        assert ids == {"0", "1", "2", "c"} and Work.counted == [7] and Work.most == 2
        client.close()


def _largest_messages(*numbers: int) -> bytes:
    """``Count`` invocations of exactly the largest message size each."""
    size = HubOptions().maximum_receive_message_size
    assert size is not None
    return b"".join(invocation("Count", n, "z" * (size - len(invocation("Count", n, "")))) for n in numbers)


async def test_a_long_polling_send_that_fills_the_inbox_waits_until_the_hub_took_it() -> None:
    Work.reset()
    async with running(Work) as h:
        token = await h.token()
        assert (await h.fetch(f"?id={token}")).code == 200
        assert (await h.fetch(f"?id={token}", method="POST", body=HANDSHAKE)).code == 200
        assert (await h.fetch(f"?id={token}", method="POST", body=invocation("Block", 0, invocation_id="b"))).code == 200
        await _first_blocked()
        # The hub takes this one and holds it, parsed, until the slot frees...
        assert (await h.fetch(f"?id={token}", method="POST", body=invocation("Count", 1, ""))).code == 200
        # ...and takes nothing more: a send that fills the inbox waits, unanswered, instead of being queued.
        full = _largest_messages(2, 3)
        assert len(full) == HubOptions().application_max_buffer_size
        third = asyncio.ensure_future(h.fetch(f"?id={token}", method="POST", body=full))
        done, _ = await asyncio.wait({third}, timeout=0.5)
        assert not done and Work.counted == []
        Work.gate.set()
        assert (await third).code == 200
        await wait_until(lambda: Work.counted == [1, 2, 3])


# -- 2. bounded read buffers: oversized frames and bodies are refused before they are read --------


async def test_a_frame_larger_than_the_limit_is_refused_with_1009_before_it_arrives() -> None:
    Work.reset()
    async with running(Work) as h:
        client = await RawWebSocket.open(h.port, await h.token())
        announced = 10_000_000
        # Only the header and the first 128 KiB: the server must not wait for the rest.
        client.writer.write(RawWebSocket.header(announced) + os.urandom(4) + b"x" * (128 * 1024))
        opcode, payload = await client.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == CLOSE_TOO_BIG
        await asyncio.wait_for(Work.gone.wait(), TIMEOUT)
        client.abort()


async def test_frames_up_to_the_transport_buffer_pass_and_one_byte_more_is_refused() -> None:
    Work.reset()
    limit = HubOptions().transport_max_buffer_size
    async with running(Work) as h:
        client = await RawWebSocket.open(h.port, await h.token())
        # Many small messages in one frame (the JS client batches sends made while one is in flight).
        batch = count_frames(10_000, per_frame=10_000)[0][: limit - 200]
        batch = batch[: batch.rindex(RS.encode()) + 1]
        client.send(batch + invocation("Count", -1, "", invocation_id="ok"))
        assert await client.messages() == [{"type": 3, "invocationId": "ok", "result": -1}]
        # More than one dispatch batch (the reader lets other connections run in between), all in order.
        assert len(Work.counted) > DISPATCH_BATCH
        assert Work.counted == [*range(len(Work.counted) - 1), -1]
        client.send(b" " * (limit + 1))
        opcode, payload = await client.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == CLOSE_TOO_BIG
        client.abort()


async def test_a_larger_maximum_message_size_raises_the_frame_limit() -> None:
    Work.reset()
    async with running(Work, maximum_receive_message_size=256 * 1024) as h:
        client = await RawWebSocket.open(h.port, await h.token())
        client.send(invocation("Count", 1, "q" * 200_000, invocation_id="big"))
        assert await client.messages() == [{"type": 3, "invocationId": "big", "result": 1}]
        client.abort()


async def _raw_post(h: Harness, token: str, head: str, body: bytes) -> tuple[bytes, bytes]:
    """Send ``head`` and ``body`` on a fresh socket; returns the response's head and body, after
    checking that the server then closed the connection (it will not read what else was announced)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(f"POST /chat?id={token} HTTP/1.1\r\nHost: 127.0.0.1:{h.port}\r\n{head}\r\n".encode() + body)
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    length = int(response.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    text = await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()
    return response, text


async def test_a_post_announcing_a_body_over_the_limit_gets_413_before_the_body_is_read() -> None:
    Work.reset()
    async with running(Work) as h:
        token = await h.token()
        assert (await h.fetch(f"?id={token}")).code == 200
        assert (await h.fetch(f"?id={token}", method="POST", body=HANDSHAKE)).code == 200
        # Only the headers: the server must answer without waiting for the 10 MB it was promised.
        head, text = await _raw_post(h, token, "Content-Length: 10000000\r\n", b"")
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b"text/plain" in head and b"65536" in text
        # The connection itself is untouched.
        assert (await h.fetch(f"?id={token}", method="POST", body=invocation("Count", 1, ""))).code == 200
        await wait_until(lambda: Work.counted == [1])


async def test_a_chunked_post_over_the_limit_gets_413() -> None:
    Work.reset()
    async with running(Work) as h:
        token = await h.token()
        assert (await h.fetch(f"?id={token}")).code == 200
        chunk = b"x" * 40_000
        # Two chunks and no last-chunk marker: the server must not wait for the end of the body.
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2))
        head, _ = await _raw_post(h, token, "Transfer-Encoding: chunked\r\n", body)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert Work.counted == []


async def test_a_post_at_the_limit_is_accepted() -> None:
    Work.reset()
    limit = HubOptions().transport_max_buffer_size
    async with running(Work) as h:
        token = await h.token()
        assert (await h.fetch(f"?id={token}")).code == 200
        assert (await h.fetch(f"?id={token}", method="POST", body=HANDSHAKE)).code == 200
        # Two messages of the largest size, exactly the limit in all.
        body = _largest_messages(1, 2)
        assert len(body) == limit
        assert (await h.fetch(f"?id={token}", method="POST", body=body)).code == 200
        await wait_until(lambda: Work.counted == [1, 2])


# -- 3. a connection that ends takes its work with it -------------------------------------------------


async def test_a_client_that_leaves_mid_flood_has_its_running_call_cancelled_and_the_rest_dropped() -> None:
    Work.reset()
    async with running(Work) as h:
        client = await RawWebSocket.open(h.port, await h.token(), reads=False)
        client.send(invocation("Block", 0, invocation_id="b"))
        await _first_blocked()
        flood = asyncio.ensure_future(client.send_all(count_frames(30_000)))
        await asyncio.wait({flood}, timeout=0.3)
        flood.cancel()
        client.abort()
        # The running call is cancelled although the server was not reading that socket...
        assert await asyncio.wait_for(Work.cancelled.get(), TIMEOUT) == 0
        await asyncio.wait_for(Work.gone.wait(), TIMEOUT)
        # ...and nothing queued behind it ever runs, even once its gate opens.
        Work.gate.set()
        await asyncio.sleep(0)
        assert Work.counted == []


class Uploads(Work):
    async def slow_sum(self, stream: AsyncIterator[int]) -> int:
        await Work.gate.wait()
        return sum([item async for item in stream])


async def test_an_upload_stuck_behind_a_slow_method_does_not_outlive_its_client() -> None:
    """The reader waits for room in a full upload stream; the client's leaving must still end it all."""
    Work.reset()
    async with running(Uploads, stream_buffer_capacity=2) as h:
        client = await JsonWs.connect(h)
        await client.send({"type": 1, "invocationId": "s", "target": "SlowSum", "arguments": [], "streamIds": ["u"]})
        await client.send(*({"type": 2, "invocationId": "u", "item": i} for i in range(5)))
        await client.send({"type": 1, "target": "Count", "arguments": [1, ""]})
        client.close()
        await asyncio.wait_for(Work.gone.wait(), TIMEOUT)
        Work.gate.set()
        await asyncio.sleep(0)
        assert Work.counted == []


# -- 4. client timeout from the handshake on -----------------------------------------------------------


async def test_a_connection_that_sends_nothing_after_its_handshake_is_closed() -> None:
    Work.reset()
    async with running(Work, client_timeout_interval=0.3, heartbeat_interval=0.02, keep_alive_interval=10) as h:
        client = await JsonWs.connect(h)
        assert await client.next(timeout=TIMEOUT) == {
            "type": 7,
            "error": "Connection closed with an error.",
            "allowReconnect": True,
        }
        assert await client.closed() == []
        await asyncio.wait_for(Work.gone.wait(), TIMEOUT)


async def test_a_client_that_pings_in_time_stays_connected() -> None:
    Work.reset()
    async with running(Work, client_timeout_interval=0.4, heartbeat_interval=0.02, keep_alive_interval=0.05) as h:
        client = await JsonWs.connect(h)
        # Five timeout periods pass; the server's pings arrive and this client answers each one.
        for _ in range(40):
            assert await client.next(timeout=TIMEOUT) == {"type": 6}
            await client.send({"type": 6})
        assert (await client.invoke("Count", 3, ""))["result"] == 3
        assert not Work.gone.is_set()
        client.close()


async def test_the_official_js_client_keeps_its_connection_through_idle_periods() -> None:
    """Its Pings (every 15 s by default, here every 200 ms) keep it inside the client timeout
    (30 s by default, here 600 ms), although the clock now starts at the handshake."""
    from examples.chat import ChatHub
    from tests.harness.interop import run_node

    options = {"client_timeout_interval": 0.6, "keep_alive_interval": 0.2, "heartbeat_interval": 0.02}
    async with running(ChatHub, **options) as h:
        result = await asyncio.to_thread(
            run_node, "keepalive.mjs", "--url", h.base, "--combos", "ws:json,sse:json,ws:msgpack",
            "--keepalive", "200", "--idle", "2000",
        )
    assert result == {
        name: {"closedWith": None, "afterIdle": "still here"} for name in ("ws-json", "sse-json", "ws-msgpack")
    }
