"""A request answered with an error after its admission call may still have queued it: the reply of the
store was lost after the script ran. The failed request is withdrawn from the queue before its limits are
refunded, so no entry waits (and gets a platform session) for a client that was told it failed.

A whole gateway on a real redis-server and the platform simulator; the only seam is the store call whose
reply is lost: it runs for real, then raises the connection error a dropped reply gives.
"""

from __future__ import annotations

import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.admission.store import Caps
from gateway.queue.answers import STORE_DOWN_MESSAGE
from gateway.queue.events import QueueChanged
from gateway.redis.client import COMMAND_TIMEOUT_SECONDS, open_redis
from ratelimit import Policy, Rule
from tests.harness.redis_process import RedisProcess
from tests.harness.stack import base_config, body_of, conversation_id_of, session_body, start_stack

pytestmark = pytest.mark.redis

#: The store calls whose reply can be lost after they queued the request: the admission itself, and the
#: requeue after the platform answered "concurrency limit" to a direct admission.
LOST_CALLS = ["admit", "requeue_front"]
#: Another client, so that its session's unit is not counted where the failed request's was.
OTHER_CLIENT = session_body(clientIdentifier="someone-else")


@pytest.fixture
async def stack(redis_url):
    client = open_redis(redis_url)
    config = base_config(cap=1)
    config["Security"].update({"RateLimitConcurrency": 5})
    # The dispatcher runs only when kicked, so whatever serves the queue does it where the test can see.
    made = await start_stack(client, config=config, dispatch_interval=3600)
    yield made
    await made.close()
    await client.aclose()


def lose_reply(store, name: str) -> list[str]:
    """Make the next ``store.<name>`` call run and then lose its reply; returns the request ids it saw."""
    real = getattr(store, name)
    seen: list[str] = []

    async def run_then_drop(*args, **kwargs):
        setattr(store, name, real)  # only this once
        seen.append(kwargs["request_id"] if name == "admit" else args[0].request_id)
        await real(*args, **kwargs)
        raise RedisConnectionError("Connection closed by server.")

    setattr(store, name, run_then_drop)
    return seen


async def fail_after_queueing(stack, lost_call: str) -> tuple[str, list[str], str | None]:
    """A request whose store call queued it but whose reply was lost; returns its id, the QueueChanged
    reasons published meanwhile, and the conversation of a session that fills the cap (if one does)."""
    conversation = None
    if lost_call == "admit":
        # The cap is full, so the admission queues the request.
        admitted = body_of(await stack.request_session(OTHER_CLIENT))
        conversation = conversation_id_of(admitted["webSocketUrl"])
    else:
        stack.sim.fail_next(1, "concurrency")  # admitted, then the platform sends it to the queue
    reasons: list[str] = []
    stack.gateway.events.subscribe(lambda event: isinstance(event, QueueChanged) and reasons.append(event.reason))
    seen = lose_reply(stack.gateway.store, lost_call)
    response = await stack.request_session()
    assert (response.code, body_of(response)) == (503, {"message": STORE_DOWN_MESSAGE})
    [request_id] = seen
    return request_id, reasons, conversation


async def concurrent_units(stack) -> list[str]:
    """The units counted against the failed request's client (no client identifier: its IP)."""
    rule = Rule(policy=Policy.CONCURRENT, subject="client:ip:127.0.0.1", limit=1)
    return [m.decode() for m in await stack.gateway.redis.zrange(stack.gateway.protection._limiter.key_for(rule), 0, -1)]


@pytest.mark.parametrize("lost_call", LOST_CALLS)
async def test_a_request_failed_after_a_lost_reply_leaves_no_entry_and_no_unit(stack, lost_call):
    request_id, reasons, _ = await fail_after_queueing(stack, lost_call)
    store = stack.gateway.store
    assert await store.queue_ids() == []
    assert (await store.status(request_id)).status == "failed"
    assert await concurrent_units(stack) == []
    counts = await store.counts()
    assert (counts["pending"], counts["queued"]) == (0, 0)
    assert "withdrawn" in reasons  # waiting clients' positions move up


@pytest.mark.parametrize("lost_call", LOST_CALLS)
async def test_nothing_is_dispatched_for_a_request_failed_after_a_lost_reply(stack, lost_call):
    request_id, _, conversation = await fail_after_queueing(stack, lost_call)
    initiated = len(stack.sim.calls)
    if conversation is not None:
        assert (await stack.end(conversation)).code == 200  # the slot frees: a waiting entry would be served
    # A new client gets the free slot at once: no older entry goes first (an admission serves those first).
    after = await stack.request_session()
    assert after.code == 200, body_of(after)
    assert len(stack.sim.calls) == initiated + 1
    counts = await stack.gateway.store.counts()
    assert (counts["active"], counts["pending"], counts["queued"]) == (1, 0, 0)
    assert (await stack.gateway.store.status(request_id)).status == "failed"


async def test_after_a_store_timeout_the_answer_does_not_wait_and_the_request_is_taken_back_later():
    # Redis hangs while the admission call is in flight: the client gets its 503 after one command timeout,
    # not after the withdrawal and the refund have timed out too; when Redis answers again, whatever the
    # hung call may have queued is taken back and its unit given back.
    server = RedisProcess()
    server.start()
    client = open_redis(server.url)
    config = base_config(cap=0)
    config["Security"].update({"RateLimitConcurrency": 5})
    made = await start_stack(client, config=config, dispatch_interval=3600)
    try:
        server.pause()
        try:
            started = time.monotonic()
            response = await made.request_session()
            elapsed = time.monotonic() - started
        finally:
            server.resume()
        assert (response.code, body_of(response)) == (503, {"message": STORE_DOWN_MESSAGE})
        # one command timeout, not the two or three of a take-back made before answering
        assert elapsed < 2 * COMMAND_TIMEOUT_SECONDS - 1, f"answered after {elapsed:.1f} s"
        assert await made.gateway.service.settle(timeout=3 * COMMAND_TIMEOUT_SECONDS)
        assert await made.gateway.store.queue_ids() == []
        assert await concurrent_units(made) == []
    finally:
        await made.close()
        await client.aclose()
        server.close()


async def test_a_request_a_dispatcher_took_meanwhile_keeps_its_limits(stack):
    # The lost admit reply had queued the request, and a dispatcher claimed it before the take-back: its
    # platform call is under way and the session it gets counts until its webhook, as for a client that
    # leaves while its session is being created. So the entry leaves the queue but its unit stays.
    store = stack.gateway.store
    admitted = body_of(await stack.request_session(OTHER_CLIENT))
    assert "webSocketUrl" in admitted  # the cap (1) is full: the next request is queued
    real = store.admit
    claimed = []

    async def admit_then_claim_then_drop(*args, **kwargs):
        store.admit = real
        await real(*args, **kwargs)
        claimed.extend(await store.claim(caps=Caps(global_cap=2), pending_lease_seconds=30, limit=1))
        raise RedisConnectionError("Connection closed by server.")

    store.admit = admit_then_claim_then_drop
    response = await stack.request_session()
    assert (response.code, body_of(response)) == (503, {"message": STORE_DOWN_MESSAGE})
    [entry] = claimed
    assert await concurrent_units(stack) == [entry.request_id]
    assert (await store.status(entry.request_id)).status == "failed"  # withdrawn from the queue


async def test_a_requeue_that_never_ran_gives_its_slot_back_at_once(stack):
    # The platform said "concurrency limit" and the requeue failed before Redis ran it: the request still
    # holds its pending lease, which must not keep the slot from the next client until the lease expires.
    store = stack.gateway.store
    real = store.requeue_front

    async def fail_unsent(entry):
        store.requeue_front = real
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1. Connection refused.")

    store.requeue_front = fail_unsent
    stack.sim.fail_next(1, "concurrency")
    response = await stack.request_session()
    assert (response.code, body_of(response)) == (503, {"message": STORE_DOWN_MESSAGE})
    counts = await store.counts()
    assert (counts["pending"], counts["queued"]) == (0, 0)
    assert await concurrent_units(stack) == []
    after = await stack.request_session()  # the cap is 1: served only if the slot came back
    assert after.code == 200, body_of(after)
