"""A client that leaves while its platform session is being created keeps its concurrency unit: the session
it gets counts until its webhook, so leaving cannot be used to slip past the concurrency limit."""

from __future__ import annotations

import asyncio

import pytest
import ujson

from tests.harness.stack import base_config, concurrent_units_used, conversation_id_of, start_stack


@pytest.fixture
async def stack(store_client):
    config = base_config(cap=1)
    config["Security"].update({"RateLimitConcurrency": 2})
    made = await start_stack(store_client, config=config)
    yield made
    await made.close()


async def test_leaving_while_the_session_is_being_created_keeps_the_unit_until_the_webhook(stack):
    platform = stack.gateway.platform
    original = platform.initiate
    calling, gate = asyncio.Event(), asyncio.Event()

    async def gated_initiate(*args, **kwargs):
        calling.set()
        await gate.wait()  # the platform call is in flight until the test opens the gate
        return await original(*args, **kwargs)

    first = ujson.loads((await stack.request_session()).body)
    waiting = ujson.loads((await stack.request_session()).body)
    request_id = waiting["uniqueRequestId"]
    ready = stack.outcome(request_id)
    platform.initiate = gated_initiate
    assert (await stack.end(conversation_id_of(first["webSocketUrl"]))).code == 200
    await asyncio.wait_for(calling.wait(), 10)  # the dispatcher is creating the waiting client's session

    try:
        assert await stack.gateway.service.leave(request_id) is True
        assert await concurrent_units_used(stack) == 1  # still held: its session is on the way
    finally:
        gate.set()  # let the dispatch finish either way, so the stack can stop
    event = await asyncio.wait_for(ready, 10)
    assert await concurrent_units_used(stack) == 1  # the session counts
    assert (await stack.end(conversation_id_of(event.web_socket_url))).code == 200
    assert await concurrent_units_used(stack) == 0  # and its webhook gives the unit back


async def test_leaving_while_the_platform_turns_the_session_down_for_concurrency_gives_the_unit_back(stack):
    platform = stack.gateway.platform
    original = platform.initiate
    calling, gate = asyncio.Event(), asyncio.Event()

    async def gated_initiate(*args, **kwargs):
        calling.set()
        await gate.wait()
        return await original(*args, **kwargs)

    first = ujson.loads((await stack.request_session()).body)
    waiting = ujson.loads((await stack.request_session()).body)
    platform.initiate = gated_initiate
    requeued = asyncio.get_running_loop().create_future()
    stack.gateway.events.subscribe(
        lambda event: getattr(event, "reason", None) == "requeued" and not requeued.done() and requeued.set_result(1))
    assert (await stack.end(conversation_id_of(first["webSocketUrl"]))).code == 200
    await asyncio.wait_for(calling.wait(), 10)
    try:
        assert await stack.gateway.service.leave(waiting["uniqueRequestId"]) is True
        assert await concurrent_units_used(stack) == 1  # kept for the session it might still get
        await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "concurrency"})
    finally:
        gate.set()
    await asyncio.wait_for(requeued, 10)  # the platform said no; the request had left, so it is not requeued
    assert await concurrent_units_used(stack) == 0
