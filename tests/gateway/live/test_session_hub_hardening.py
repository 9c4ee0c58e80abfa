"""The session hub under hostile or unlucky input: ids in any case, text without a UTF-8 form, and failed
registrations that must leave nothing behind in Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from gateway.live.hub import UNKNOWN_ID_MESSAGE
from gateway.model.text import unsendable_message
from tests.harness.session_hub import FAST, TIMEOUT, HubClient, fill_and_queue
from tests.harness.stack import base_config, start_hub_stack

pytestmark = pytest.mark.redis

async def test_register_accepts_the_id_in_any_letter_case(redis_client: aioredis.Redis) -> None:
    # The REST routes take ids in any case (UUIDs are case-insensitive); the hub must too, and the
    # outcome must reach the connection that registered the upper-case form.
    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    client = await HubClient.connect(stack.base_url)
    try:
        conversations, queued = await fill_and_queue(stack, 1)
        assert await client.register(queued[0].upper()) == {"status": "queued", "queuePosition": 1}
        assert (await stack.end(conversations[0])).code == 200
        _, ready = await client.next_event("SessionReady")
        assert ready["webSocketUrl"].startswith("ws")
        reply = await client.invoke("Leave", queued[0].upper())
        assert "error" not in reply
    finally:
        await client.close()
        await stack.close()


async def test_an_id_without_a_utf8_form_is_a_hub_error(redis_client: aioredis.Redis) -> None:
    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    client = await HubClient.connect(stack.base_url)
    try:
        # json.dumps writes the lone surrogate as the escape "\\ud800": valid JSON, no UTF-8 form.
        reply = await client.invoke("Register", "b\ud800")
        assert reply["error"].endswith("HubException: " + unsendable_message("uniqueRequestId"))
        reply = await client.invoke("Leave", "b\ud800")
        assert reply["error"].endswith("HubException: " + unsendable_message("uniqueRequestId"))
        # The connection survives and works.
        _, queued = await fill_and_queue(stack, 1)
        assert await client.register(queued[0]) == {"status": "queued", "queuePosition": 1}
    finally:
        await client.close()
        await stack.close()


async def _subscriptions(redis_client: aioredis.Redis) -> tuple[list[bytes], list[tuple[bytes, int]]]:
    channels = sorted(await redis_client.pubsub_channels())
    counts = sorted(await redis_client.pubsub_numsub(*channels)) if channels else []
    return channels, counts


async def test_failed_registrations_leave_no_subscription_behind(redis_client: aioredis.Redis) -> None:
    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    try:
        before = await _subscriptions(redis_client)
        hub = stack.gateway.session_hub
        closed = hub.connection_closed
        gone: asyncio.Queue[str] = asyncio.Queue()

        async def connection_closed(connection_id: str) -> None:
            await closed(connection_id)
            gone.put_nowait(connection_id)

        hub.connection_closed = connection_closed  # type: ignore[method-assign]
        for i in range(50):
            client = await HubClient.connect(stack.base_url)
            bad = ["no-such-request-%d" % i, "x" * 300, "", 7][i % 4]
            reply = await client.invoke("Register", bad)
            assert "error" in reply, reply
            await client.close()
            await asyncio.wait_for(gone.get(), TIMEOUT)
        assert await _subscriptions(redis_client) == before
    finally:
        await stack.close()


async def _subscribe_calls(redis_client: aioredis.Redis) -> int:
    stats = await redis_client.info("commandstats")
    return int(stats.get("cmdstat_subscribe", {}).get("calls", 0))


async def test_connecting_and_registering_cost_no_backplane_subscription(redis_url: str,
                                                                        redis_client: aioredis.Redis) -> None:
    # A flood of connections and Register calls, with made-up ids or real ones, must not churn the
    # backplane's one pub/sub connection, which every hub event of the process goes through: the gateway's
    # backplane uses the shared layout, whose channels are subscribed once when the process starts.
    config = base_config()
    config["RedisConnectionString"] = redis_url
    stack = await start_hub_stack(redis_client, hub_tuning=FAST, config=config)
    before = await _subscribe_calls(redis_client)
    client = await HubClient.connect(stack.base_url)
    try:
        for i in range(20):
            reply = await client.invoke("Register", f"made-up-{i}")
            assert reply["error"].endswith(f"HubException: {UNKNOWN_ID_MESSAGE}")
        _, queued = await fill_and_queue(stack, 1)
        assert await client.register(queued[0]) == {"status": "queued", "queuePosition": 1}
        assert await _subscribe_calls(redis_client) == before
    finally:
        await client.close()
        await stack.close()
