"""A long-polling client that stops polling is ended once its undelivered messages pass the byte limit.

Real server on a free port; the long-polling client is plain HTTP requests made by hand, so the
test decides exactly when a poll is outstanding and when the client is between polls. A healthy
WebSocket client receives the same broadcasts and must get each one before the next is sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.harness.signalr_server import RS, TIMEOUT, JsonWs, Tracked, frame, parse, running, wait_until

LIMIT = 64 * 1024
PAYLOAD = "x" * 20_000
# The limit is passed after a handful of rounds; this many means it was never enforced.
MAX_ROUNDS = 40
HANDSHAKE = ('{"protocol":"json","version":1}' + RS).encode()
CLOSE_WITH_ERROR = {"type": 7, "error": "Connection closed with an error.", "allowReconnect": True}


async def _long_polling_client(h: Any) -> tuple[str, str]:
    """Negotiate, first poll, handshake, and the poll that collects the handshake response.

    Returns (token, connection id); the client is then between polls.
    """
    token = str((await h.negotiate())["connectionToken"])
    assert (await h.fetch(f"?id={token}")).code == 200
    assert (await h.fetch(f"?id={token}", method="POST", body=HANDSHAKE)).code == 200
    connection_id = await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)
    assert (await h.fetch(f"?id={token}")).body == b"{}" + RS.encode()
    return token, connection_id


async def _broadcast(h: Any, healthy: JsonWs, round_: int, payload: str = PAYLOAD) -> None:
    """One broadcast, which the healthy client must receive before anything else happens."""
    await h.server.context.clients.all.send("Big", round_, payload)
    message = await healthy.next_non_ping()
    assert message is not None and message["target"] == "Big" and message["arguments"][0] == round_


async def _poll(h: Any, token: str) -> Any:
    return await h.fetch(f"?id={token}")


async def test_a_client_that_stops_polling_gets_a_close_message_with_an_error_then_404() -> None:
    Tracked.reset()
    async with running(Tracked, maximum_send_buffer_size=LIMIT) as h:
        healthy = await JsonWs.connect(h)
        healthy_id = await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)
        token, polling_id = await _long_polling_client(h)
        gone = Tracked.ended(polling_id)

        rounds = 0
        while not gone.done():
            assert rounds < MAX_ROUNDS, "the client that stopped polling was never ended"
            await _broadcast(h, healthy, rounds)
            rounds += 1
        assert await gone is None
        # Not ended before the limit: the first rounds fit in it.
        assert rounds * len(PAYLOAD) > LIMIT

        # Broadcasts after the end are not kept for it either.
        for round_ in range(rounds, rounds + 5):
            await _broadcast(h, healthy, round_)

        # The backlog was dropped: the next poll carries the Close message alone.
        closing = await _poll(h, token)
        assert closing.code == 200
        assert parse(closing.body) == [CLOSE_WITH_ERROR]
        # Then the usual end of a long-polling connection: 204, then 404.
        assert (await _poll(h, token)).code == 204
        assert (await _poll(h, token)).code == 404

        assert (await healthy.invoke("Ping"))["result"] == "pong"
        assert not Tracked.ended(healthy_id).done()


async def test_a_backlog_under_the_limit_is_delivered_whole_on_the_next_poll() -> None:
    Tracked.reset()
    async with running(Tracked, maximum_send_buffer_size=LIMIT) as h:
        healthy = await JsonWs.connect(h)
        await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)
        token, polling_id = await _long_polling_client(h)

        fits = LIMIT // (len(PAYLOAD) + 100)
        for round_ in range(fits):
            await _broadcast(h, healthy, round_)
        poll = await _poll(h, token)
        assert [m["arguments"][0] for m in parse(poll.body)] == list(range(fits))
        assert not Tracked.ended(polling_id).done()


async def test_a_message_larger_than_the_limit_reaches_a_client_that_keeps_polling() -> None:
    Tracked.reset()
    big = "y" * (4 * LIMIT)
    async with running(Tracked, maximum_send_buffer_size=LIMIT) as h:
        healthy = await JsonWs.connect(h)
        await asyncio.wait_for(Tracked.connected.get(), TIMEOUT)
        token, polling_id = await _long_polling_client(h)

        # Queued between polls: nothing was queued before it, so it waits for the next poll.
        await _broadcast(h, healthy, 0, big)
        assert parse((await _poll(h, token)).body) == [{"type": 1, "target": "Big", "arguments": [0, big]}]

        # Sent while a poll is outstanding, with more right behind it: the poll is about to take
        # them, so nothing counts against the limit.
        outstanding = asyncio.ensure_future(_poll(h, token))
        connection = h.server.connections.get(token)
        await wait_until(lambda: connection.outbox.draining)
        await h.server.context.clients.all.send("Big", 1, big)
        await h.server.context.clients.all.send("Big", 2, big)
        for round_ in (1, 2):
            message = await healthy.next_non_ping()
            assert message is not None and message["arguments"][0] == round_
        received = parse((await outstanding).body)
        while len(received) < 2:
            received += parse((await _poll(h, token)).body)
        assert [m["arguments"] for m in received] == [[1, big], [2, big]]

        # Still a working connection.
        body = frame({"type": 1, "invocationId": "1", "target": "Ping", "arguments": []}).encode()
        assert (await h.fetch(f"?id={token}", method="POST", body=body)).code == 200
        assert parse((await _poll(h, token)).body) == [{"type": 3, "invocationId": "1", "result": "pong"}]
        assert not Tracked.ended(polling_id).done()
