"""A claim whose reply is lost in a Redis stall does not park the head of the queue.

The dispatcher's claim reaches a frozen (SIGSTOP) Redis and times out; after SIGCONT Redis runs it. The
dispatcher knows the token it claimed with and settles it as soon as Redis answers, so the head is served
within the stall plus two seconds, once. The gateway's clock is fake and never moves: no lease expires, so
nothing but the settlement can serve the head.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import ujson
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.admission.store import Caps
from gateway.queue.events import SessionReady
from gateway.redis.client import COMMAND_TIMEOUT_SECONDS, open_redis
from tests.harness.stack import base_config, conversation_id_of, start_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]

#: Longer than the command timeout, so the claim's reply is lost.
STALL_SECONDS = COMMAND_TIMEOUT_SECONDS + 1.5


async def test_a_claim_whose_reply_was_lost_is_served_once_redis_answers(redis_proc, clock, caplog):
    client = open_redis(redis_proc.url)
    stack = await start_stack(client, config=base_config(cap=1), clock=clock)
    store = stack.gateway.store
    original_claim = store.claim
    arrived, release = asyncio.Event(), asyncio.Event()
    claim_errors: list[BaseException] = []

    async def gated_claim(**kwargs):
        arrived.set()
        await release.wait()  # the test lets the claim go once Redis is frozen
        try:
            return await original_claim(**kwargs)
        except BaseException as exc:
            claim_errors.append(exc)
            raise

    try:
        first = ujson.loads((await stack.request_session()).body)
        head = ujson.loads((await stack.request_session()).body)
        assert head["queuePosition"] == 1
        ready = stack.outcome(head["uniqueRequestId"])
        # A running gateway has long loaded its claim script; a lost EVALSHA of an unknown script would
        # only come back NOSCRIPT, claiming nothing. (A cap of 0 claims nothing here.)
        await store.claim(caps=Caps(global_cap=0), pending_lease_seconds=5, limit=1)
        store.claim = gated_claim
        # The slot frees; the dispatcher's next claim waits at the gate.
        assert (await stack.end(conversation_id_of(first["webSocketUrl"]))).code == 200
        await asyncio.wait_for(arrived.wait(), 10)
        redis_proc.pause()
        stalled_at = time.monotonic()
        store.claim = original_claim  # later rounds claim normally
        release.set()
        try:
            await asyncio.sleep(STALL_SECONDS)  # the outage itself, not a synchronisation
        finally:
            redis_proc.resume()
        event = await asyncio.wait_for(ready, 30)
        served_after = time.monotonic() - stalled_at
        assert isinstance(event, SessionReady)
        assert [type(e) for e in claim_errors] == [RedisTimeoutError]  # the claim's reply was lost
        # ... and Redis ran it after all: the head was served under that claim, not a later one.
        assert any("claimed by a call whose reply was lost" in r.getMessage() and head["uniqueRequestId"]
                   in r.getMessage() for r in caplog.records if r.name == "gateway.queue.dispatcher")
        assert served_after <= STALL_SECONDS + 2, f"served {served_after:.1f} s after a {STALL_SECONDS} s stall"
        await stack.gateway.dispatcher.wait_idle()
        assert stack.sim.stats()["initiated"] == 2  # the head reached the platform once
        counts = await store.counts()
        assert (counts["pending"], counts["active"], counts["queued"]) == (0, 1, 0)
    finally:
        release.set()
        redis_proc.resume()
        await stack.close()
        await client.aclose()


async def test_an_admission_whose_reply_was_lost_does_not_park_what_it_claimed(redis_proc, clock):
    # An admission claims older eligible entries before its own request, in the same call. When its reply
    # is lost, the client is told 503, and what the call claimed must not wait for its leases to expire
    # twice (the clock is fake and never moves here: they never would).
    client = open_redis(redis_proc.url)
    stack = await start_stack(client, config=base_config(cap=1), clock=clock)
    store = stack.gateway.store
    original_claim, original_admit = store.claim, store.admit
    arrived, release = asyncio.Event(), asyncio.Event()

    async def no_claims(**kwargs):
        return []  # the dispatcher finds nothing, so only the admission below can claim the head

    async def gated_admit(**kwargs):
        arrived.set()
        await release.wait()  # the test lets the admission go once Redis is frozen
        return await original_admit(**kwargs)

    try:
        first = ujson.loads((await stack.request_session()).body)
        head = ujson.loads((await stack.request_session()).body)
        ready = stack.outcome(head["uniqueRequestId"])
        await store.claim(caps=Caps(global_cap=0), pending_lease_seconds=5, limit=1)  # scripts loaded
        store.claim = no_claims
        await store.end_session(conversation_id_of(first["webSocketUrl"]))  # the slot frees, nobody is kicked
        store.admit = gated_admit
        answer = asyncio.ensure_future(stack.request_session())
        await asyncio.wait_for(arrived.wait(), 10)
        redis_proc.pause()
        stalled_at = time.monotonic()
        release.set()
        store.admit = original_admit
        assert (await asyncio.wait_for(answer, 30)).code == 503  # the admission's reply was lost
        store.claim = original_claim
        try:
            await asyncio.sleep(max(0.0, STALL_SECONDS - (time.monotonic() - stalled_at)))  # the outage itself
        finally:
            redis_proc.resume()
        event = await asyncio.wait_for(ready, 30)
        served_after = time.monotonic() - stalled_at
        assert isinstance(event, SessionReady)
        assert served_after <= STALL_SECONDS + 2, f"served {served_after:.1f} s after a {STALL_SECONDS} s stall"
        await stack.gateway.dispatcher.wait_idle()
        await stack.gateway.service.settle(10)
        assert stack.sim.stats()["initiated"] == 2  # the head reached the platform once
        counts = await store.counts()
        # Nothing else holds a slot: the refused request's own lease (if its call took one) was given back.
        assert (counts["pending"], counts["active"], counts["queued"]) == (0, 1, 0)
    finally:
        release.set()
        redis_proc.resume()
        await stack.close()
        await client.aclose()
