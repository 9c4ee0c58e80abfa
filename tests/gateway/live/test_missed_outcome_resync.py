"""An outcome the backplane lost reaches its visitor when the backplane is subscribed again.

Pub/sub delivers at most once: a ``SessionReady`` published while another gateway's subscription is down
never arrives there. Two gateways on a real redis-server; the one that serves the visitor has its publish
of the outcome dropped (the network losing it: the one seam faked here); the other, where the visitor
waits, then loses its subscription (``CLIENT KILL TYPE pubsub``), subscribes again, and sends the outcome
from the store.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from gateway.queue.events import SessionFailed, SessionReady
from gateway.redis.client import open_redis
from tests.harness.session_hub import FAST, TIMEOUT, HubClient
from tests.harness.stack import (
    Stack,
    base_config,
    conversation_id_of,
    session_body,
    start_hub_stack,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]


async def _two_gateways(url: str) -> tuple[Stack, Stack, list[aioredis.Redis]]:
    config = base_config(Queue={"RegisterTimeoutSeconds": 60, "DisconnectGraceSeconds": 45})
    config["RedisConnectionString"] = url
    clients = [open_redis(url), open_redis(url)]
    a = await start_hub_stack(clients[0], hub_tuning=FAST, config=config)
    b = await start_hub_stack(clients[1], hub_tuning=FAST, config=config, sim=a.sim, sim_url=a.sim_url)
    await b.gateway.dispatcher.stop()  # A serves the queue; B only holds the visitors' connections
    return a, b, clients


def _drop_published_outcomes(stack: Stack) -> list[str]:
    """Make ``stack``'s backplane lose every group message it publishes; returns the channels it lost."""
    lifetime = stack.gateway.session_hub.lifetime
    original = lifetime._publish
    lost: list[str] = []

    async def lossy(channel: str, payload: bytes) -> int | None:
        if channel == lifetime.channels.groups or channel.startswith(lifetime.channels.group_prefix):
            lost.append(channel)
            return None
        return await original(channel, payload)

    lifetime._publish = lossy  # type: ignore[method-assign]
    return lost


async def _cut_subscriptions(url: str) -> None:
    """Close every pub/sub connection on the server: redis-py's retry makes a new one and subscribes again
    by itself, so the backplane's listener sees no failure, only confirmations nobody asked for."""
    observer = aioredis.Redis.from_url(url)
    try:
        assert await observer.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 2
    finally:
        await observer.aclose()


@pytest.mark.parametrize("outcome", ["ready", "failed"])
async def test_an_outcome_published_while_the_backplane_was_down_arrives_after_it_is_back(
        redis_url: str, outcome: str) -> None:
    a, b, clients = await _two_gateways(redis_url)
    visitor: HubClient | None = None
    try:
        conversations = []
        for i in range(2):  # the cap (2) is taken
            response = await a.request_session(session_body(clientIdentifier=f"first-{i}"))
            assert response.code == 200, response.body
            conversations.append(conversation_id_of(json.loads(response.body)["webSocketUrl"]))
        response = await a.request_session(session_body(clientIdentifier="waiting"))
        assert response.code == 202, response.body
        request_id = json.loads(response.body)["uniqueRequestId"]
        visitor = await HubClient.connect(b.base_url)
        await visitor.register(request_id)

        lost = _drop_published_outcomes(a)
        if outcome == "ready":
            assert (await a.end(conversations[0])).code == 200  # A serves the visitor at once
            expected, event_type = "SessionReady", SessionReady
        else:
            response = await a.call("DELETE", f"/api/session/request/{request_id}")  # gives the place up
            assert response.code in (200, 204), response.body
            expected, event_type = "SessionFailed", SessionFailed
        assert isinstance(await asyncio.wait_for(a.outcome(request_id), TIMEOUT), event_type)
        assert lost, "the outcome was not published through the backplane at all"
        assert visitor.received(expected) == []  # lost on the way, as during a failover

        await _cut_subscriptions(redis_url)
        _, message = await visitor.next_event(expected, timeout=TIMEOUT)
        assert message["webSocketUrl" if outcome == "ready" else "message"]
    finally:
        if visitor is not None:
            await visitor.close()
        await b.close()
        await a.close()
        for client in clients:
            await client.aclose()
