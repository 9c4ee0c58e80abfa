"""Two deployments on one Redis, told apart by ``Redis.KeyPrefix``: each has its own cap, queue and backplane.

Real redis-server; each deployment's gateway has its own platform simulator. With the same prefix the second
deployment would see the first one's sessions and queue behind them.
"""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from gateway.redis.client import open_redis
from tests.harness.session_hub import FAST, TIMEOUT, HubClient
from tests.harness.stack import (
    base_config,
    conversation_id_of,
    session_body,
    start_hub_stack,
)

pytestmark = pytest.mark.redis


async def test_each_deployment_keeps_its_own_slots_queue_and_hub(redis_url: str) -> None:
    stacks, clients = [], []
    try:
        for prefix in ("shop-eu", "shop-us"):
            config = base_config(cap=1, Redis={"KeyPrefix": prefix})
            config["RedisConnectionString"] = redis_url
            clients.append(open_redis(redis_url))
            stacks.append(await start_hub_stack(clients[-1], hub_tuning=FAST, config=config))
        eu, us = stacks
        # Each has a slot of its own: the other deployment's session does not count against it.
        first_eu = await eu.request_session(session_body(clientIdentifier="eu-1"))
        first_us = await us.request_session(session_body(clientIdentifier="us-1"))
        assert (first_eu.code, first_us.code) == (200, 200), (first_eu.body, first_us.body)
        waiting = await eu.request_session(session_body(clientIdentifier="eu-2"))
        assert waiting.code == 202 and json.loads(waiting.body)["queuePosition"] == 1
        request_id = json.loads(waiting.body)["uniqueRequestId"]

        observer = aioredis.Redis.from_url(redis_url)
        try:
            names = {key.decode() for key in await observer.keys("*")}
        finally:
            await observer.aclose()
        assert names and all(name.startswith(("shop-eu:", "shop-us:")) for name in names), sorted(names)
        assert any(name.startswith("shop-us:") for name in names)

        # The other deployment knows nothing of it; its own hub serves it when its slot frees.
        assert (await us.call("GET", f"/api/session/status/{request_id}")).code == 404
        visitor = await HubClient.connect(eu.base_url)
        try:
            await visitor.register(request_id)
            assert (await us.end(conversation_id_of(json.loads(first_us.body)["webSocketUrl"]))).code == 200
            assert visitor.received("SessionReady") == []
            assert (await eu.end(conversation_id_of(json.loads(first_eu.body)["webSocketUrl"]))).code == 200
            _, ready = await visitor.next_event("SessionReady", timeout=TIMEOUT)
            assert ready["webSocketUrl"]
        finally:
            await visitor.close()
    finally:
        for stack in stacks:
            await stack.close()
        for client in clients:
            await client.aclose()
