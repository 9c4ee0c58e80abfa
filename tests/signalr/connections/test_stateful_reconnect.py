"""Stateful reconnect: Ack/Sequence bookkeeping and WebSocket re-attach ."""

from __future__ import annotations

import pytest
import tornado.httpclient

from examples.chat import ChatHub
from signalr.errors import ProtocolError
from signalr.protocol.stateful import StatefulBuffer
from tests.harness.signalr_server import JsonWs, running, wait_until

V2 = '{"protocol":"json","version":2}\x1e'


def test_buffer_numbering_ack_and_replay() -> None:
    buffer = StatefulBuffer(limit=10)
    assert buffer.replay() == (1, [])
    assert [buffer.record_outgoing(b"abcd") for _ in range(3)] == [1, 2, 3]
    assert buffer.over_limit and buffer.buffered_bytes == 12
    buffer.ack(2)
    assert not buffer.over_limit and buffer.replay() == (3, [b"abcd"])
    buffer.ack(3)
    assert buffer.replay() == (4, [])
    with pytest.raises(ProtocolError):
        buffer.ack(9)


def test_buffer_incoming_duplicates_sequence_and_ack_rate() -> None:
    buffer = StatefulBuffer(limit=100)
    assert [buffer.accept_incoming() for _ in range(3)] == [True, True, True]
    assert buffer.ack_due(10.0) == 3
    assert buffer.ack_due(10.5) is None  # nothing new
    buffer.sequence(2)  # the peer replays from 2: ids 2 and 3 are duplicates
    assert [buffer.accept_incoming() for _ in range(3)] == [False, False, True]
    assert buffer.ack_due(10.6) is None  # at most one Ack per second
    assert buffer.ack_due(11.0) == 4
    with pytest.raises(ProtocolError, match="Sequence ID greater"):
        buffer.sequence(6)


async def _stateful_client(h, handshake: str = V2) -> tuple[JsonWs, str]:  # type: ignore[no-untyped-def]
    body = await h.negotiate("?negotiateVersion=1&useStatefulReconnect=true")
    assert body["useStatefulReconnect"] is True
    client = JsonWs(await h.websocket(f"?id={body['connectionToken']}"))
    await client.send_raw(handshake)
    assert await client.next() == {}
    return client, body["connectionToken"]


def _drop(client: JsonWs) -> None:
    """Kill the TCP connection without a WebSocket close handshake."""
    client.ws.protocol.stream.close()  # type: ignore[union-attr]


class Events(ChatHub):
    log: list[str] = []

    async def on_connected(self) -> None:
        Events.log.append("connected")

    async def on_disconnected(self, exception: BaseException | None) -> None:
        Events.log.append("disconnected")


async def test_acks_then_a_reattach_replays_the_unacked_messages() -> None:
    Events.log = []
    async with running(Events, allow_stateful_reconnects=True, heartbeat_interval=0.02, keep_alive_interval=60) as h:
        client, token = await _stateful_client(h)
        first_id = (await client.invoke("GetConnectionId", invocation_id="1"))["result"]
        # The server acknowledges our invocation (sequence id 1).
        assert await client.next() == {"type": 8, "sequenceId": 1}
        # Two more server messages that we never acknowledge, then the socket dies.
        await client.send({"type": 1, "invocationId": "2", "target": "Echo", "arguments": ["a"]})
        assert (await client.next_non_ping())["result"] == "a"  # type: ignore[index]
        _drop(client)
        client.ws.close()
        await h.server.context.clients.all.send("Message", "while away")
        # The same token within the timeout → 101, Sequence first, then everything unacked.
        again = JsonWs(await h.websocket(f"?id={token}"))
        assert await again.next() == {"type": 9, "sequenceId": 1}
        replayed = [await again.next() for _ in range(3)]
        assert replayed == [
            {"type": 3, "invocationId": "1", "result": first_id},
            {"type": 3, "invocationId": "2", "result": "a"},
            {"type": 1, "target": "Message", "arguments": ["while away"]},
        ]
        await again.send({"type": 8, "sequenceId": 3}, {"type": 9, "sequenceId": 3})
        assert (await again.invoke("GetConnectionId", invocation_id="3"))["result"] == first_id
        assert Events.log == ["connected"]  # no OnDisconnected/OnConnected for a re-attach
        again.close()


async def test_duplicates_after_a_reconnect_are_dropped() -> None:
    async with running(allow_stateful_reconnects=True, heartbeat_interval=0.02, keep_alive_interval=60) as h:
        client, token = await _stateful_client(h)
        await client.send({"type": 1, "target": "Broadcast", "arguments": ["once"]})
        assert (await client.next_non_ping())["arguments"] == ["once"]  # type: ignore[index]
        _drop(client)
        client.ws.close()
        again = JsonWs(await h.websocket(f"?id={token}"))
        assert (await again.next())["type"] == 9  # type: ignore[index]
        # Replay our message 1 (already processed) and send a new message 2.
        await again.send(
            {"type": 9, "sequenceId": 1},
            {"type": 1, "target": "Broadcast", "arguments": ["once"]},
            {"type": 1, "invocationId": "n", "target": "Echo", "arguments": ["new"]},
        )
        seen = []
        while (message := await again.next()) is not None:
            seen.append(message)
            if message.get("invocationId") == "n":
                break
        broadcasts = [m for m in seen if m.get("target") == "Message"]
        assert broadcasts == [{"type": 1, "target": "Message", "arguments": ["once"]}]  # the replay from the buffer
        again.close()


async def test_a_sequence_ahead_of_the_server_is_a_protocol_error() -> None:
    async with running(allow_stateful_reconnects=True) as h:
        client, _ = await _stateful_client(h)
        await client.send({"type": 9, "sequenceId": 5})
        message = await client.next_non_ping()
        assert message is not None and message["type"] == 7 and message["allowReconnect"] is True
        await client.closed()


async def test_a_version_1_handshake_disables_stateful_reconnect() -> None:
    async with running(allow_stateful_reconnects=True, heartbeat_interval=0.02, keep_alive_interval=0.1) as h:
        client, token = await _stateful_client(h, '{"protocol":"json","version":1}\x1e')
        await client.invoke("Echo", 1)
        assert await client.next() == {"type": 6}  # a Ping, no Ack even though heartbeats passed
        _drop(client)
        client.ws.close()
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await h.websocket(f"?id={token}")
        assert caught.value.code == 404


async def test_a_late_reconnect_and_one_after_a_graceful_close_are_404() -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    async with running(allow_stateful_reconnects=True, clock=clock, heartbeat_interval=3600) as h:
        client, token = await _stateful_client(h)
        _drop(client)
        client.ws.close()
        connection = h.server.connections.get(token)
        assert connection is not None
        await wait_until(lambda: connection.inactive_since is not None)
        clock.now += 16
        h.server.connections.scan(clock.now)
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await h.websocket(f"?id={token}")
        assert caught.value.code == 404
        # A graceful close disposes at once.
        client, token = await _stateful_client(h)
        client.ws.close(1000)
        await wait_until(lambda: h.server.connections.get(token) is None)


async def test_a_full_buffer_pauses_sends_until_acked() -> None:
    async with running(
        allow_stateful_reconnects=True,
        stateful_reconnect_buffer_size=100,
        heartbeat_interval=0.02,
        keep_alive_interval=60,
    ) as h:
        client, _ = await _stateful_client(h)
        await client.send({"type": 4, "invocationId": "c", "target": "Count", "arguments": [20]})
        items: list[int] = []
        # Without Acks the server stops once ~100 bytes are unacknowledged.
        with pytest.raises(TimeoutError):
            while True:
                message = await client.next(timeout=0.5)
                assert message is not None
                if message["type"] == 2:
                    items.append(message["item"])
        assert 0 < len(items) < 20
        while True:
            await client.send({"type": 8, "sequenceId": len(items)})
            message = await client.next()
            assert message is not None
            if message["type"] == 2:
                items.append(message["item"])
            elif message["type"] == 3:
                break
        assert items == list(range(20))  # nothing lost while the buffer was full
        client.close()
