"""The server's fast paths keep the slow paths' behaviour: inline invocations, the frame reader.

Plain functions run inline in the receive path when nothing is queued ahead of them; the WebSocket
reader cuts frames itself. These tests pin what must not change: order, one invocation at a time,
replay-buffer back-pressure, fragmentation, control frames and the WebSocket size limit.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

from examples.chat import ChatHub
from signalr.tornado import _TEXT_FIN
from tests.harness.signalr_server import TIMEOUT, JsonWs, frame, running

V2 = '{"protocol":"json","version":2}\x1e'


class Ordered(ChatHub):
    calls: list[str] = []
    gate: asyncio.Event

    async def slow(self, label: str) -> str:
        Ordered.calls.append(f"start {label}")
        await Ordered.gate.wait()
        Ordered.calls.append(f"end {label}")
        return label

    def note(self, label: str) -> str:
        Ordered.calls.append(f"note {label}")
        return label

    def later(self, value: int) -> Any:
        # A plain function that hands back an awaitable: a task awaits it, holding the slot.
        async def add_one() -> int:
            await asyncio.sleep(0)
            return value + 1

        return add_one()

    def broken(self) -> None:
        raise RuntimeError("hidden")

    def unencodable(self) -> object:
        return {1, 2}


async def _replies(client: JsonWs, count: int) -> list[dict[str, Any]]:
    return [await client.next_non_ping() for _ in range(count)]  # type: ignore[misc]


async def test_a_plain_function_waits_for_the_invocation_running_before_it() -> None:
    Ordered.calls, Ordered.gate = [], asyncio.Event()
    async with running(Ordered) as h:
        client = await JsonWs.connect(h)
        await client.send(
            {"type": 1, "invocationId": "a", "target": "Slow", "arguments": ["a"]},
            {"type": 4, "invocationId": "s", "target": "Count", "arguments": [1]},
            {"type": 1, "invocationId": "b", "target": "Note", "arguments": ["b"]},
        )
        # The stream runs beside "a"; "b" (and anything after it) waits for the slot "a" holds.
        assert await _replies(client, 2) == [
            {"type": 2, "invocationId": "s", "item": 0},
            {"type": 3, "invocationId": "s"},
        ]
        assert Ordered.calls == ["start a"]
        Ordered.gate.set()
        replies = await _replies(client, 2)
        assert [r["invocationId"] for r in replies] == ["a", "b"]
        assert Ordered.calls == ["start a", "end a", "note b"]
        client.close()


async def test_inline_outcomes_match_the_awaited_path() -> None:
    Ordered.calls = []
    async with running(Ordered) as h:
        client = await JsonWs.connect(h)
        await client.send(
            {"type": 1, "invocationId": "1", "target": "Later", "arguments": [1]},
            {"type": 1, "invocationId": "2", "target": "Note", "arguments": ["after"]},
            {"type": 1, "invocationId": "3", "target": "Broken", "arguments": []},
            {"type": 1, "invocationId": "4", "target": "Unencodable", "arguments": []},
            {"type": 1, "invocationId": "5", "target": "Fail", "arguments": []},
        )
        replies = await _replies(client, 5)
        assert replies[0] == {"type": 3, "invocationId": "1", "result": 2}
        assert replies[1] == {"type": 3, "invocationId": "2", "result": "after"}
        assert replies[2]["error"] == "An unexpected error occurred invoking 'Broken' on the server."
        assert replies[3]["error"].startswith("An unexpected error occurred invoking 'Unencodable' on the server.")
        assert replies[4]["error"] == (
            "An unexpected error occurred invoking 'Fail' on the server. HubException: Fail was called"
        )
        client.close()


async def test_a_full_replay_buffer_holds_inline_completions_until_the_ack() -> None:
    async with running(Ordered, allow_stateful_reconnects=True, stateful_reconnect_buffer_size=10) as h:
        body = await h.negotiate("?negotiateVersion=1&useStatefulReconnect=true")
        client = JsonWs(await h.websocket(f"?id={body['connectionToken']}"))
        await client.send_raw(V2)
        assert await client.next() == {}
        # The first Completion fills the 10-byte buffer; the second must wait for an Ack, and the
        # receive path must stay free to read that Ack.
        await client.send(
            {"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["first"]},
            {"type": 1, "invocationId": "2", "target": "Echo", "arguments": ["second"]},
        )
        assert await client.next_non_ping() == {"type": 3, "invocationId": "1", "result": "first"}
        assert h.server.sessions  # still connected, second Completion held back
        await client.send({"type": 8, "sequenceId": 1})
        assert await client.next_non_ping() == {"type": 3, "invocationId": "2", "result": "second"}
        client.close()


def _client_frame(first: int, payload: bytes, *, length: int | None = None) -> bytes:
    """One masked client frame; ``length`` overrides the announced size (for the limit test)."""
    size = len(payload) if length is None else length
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_fragments_and_an_interleaved_ping_make_one_message() -> None:
    async with running() as h:
        client = await JsonWs.connect(h)
        text = frame({"type": 1, "invocationId": "f", "target": "Echo", "arguments": ["fragmented"]}).encode()
        parts = [text[:10], text[10:20], text[20:]]
        raw = (
            _client_frame(0x01, parts[0])  # text, not final
            + _client_frame(0x89, b"hi")  # ping between fragments
            + _client_frame(0x00, parts[1])  # continuation
            + _client_frame(0x80, parts[2])  # final continuation
        )
        stream = client.ws.protocol.stream  # type: ignore[union-attr]
        # Byte by byte: every partial header and payload path of the reader is taken.
        for index in range(len(raw)):
            await stream.write(raw[index : index + 1])
        assert await client.next_non_ping() == {"type": 3, "invocationId": "f", "result": "fragmented"}
        client.close()


async def test_a_large_message_arrives_whole() -> None:
    async with running(maximum_receive_message_size=2_000_000) as h:
        client = await JsonWs.connect(h)
        big = "x" * 1_500_000
        assert (await client.invoke("Echo", big))["result"] == big
        client.close()


async def test_a_frame_over_the_websocket_limit_is_closed_with_1009() -> None:
    async with running() as h:
        client = await JsonWs.connect(h)
        stream = client.ws.protocol.stream  # type: ignore[union-attr]
        # Only the header: the announced size alone must end the connection.
        await stream.write(_client_frame(_TEXT_FIN, b"", length=64 * 1024 * 1024)[:14])
        assert await asyncio.wait_for(client.ws.read_message(), TIMEOUT) is None
        assert client.ws.close_code == 1009
        client.close()


async def test_reserved_bits_drop_the_socket() -> None:
    async with running() as h:
        client = await JsonWs.connect(h)
        stream = client.ws.protocol.stream  # type: ignore[union-attr]
        await stream.write(_client_frame(0xC1, b"{}\x1e"))  # RSV1 without a negotiated extension
        assert await asyncio.wait_for(client.ws.read_message(), TIMEOUT) is None
        client.close()
