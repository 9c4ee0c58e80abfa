"""Redis outages seen through the gateway's HTTP API: refused clearly, recovered alone, nothing lost.

Each test owns a persistent ``redis-server`` (AOF, ``appendfsync always``) that it stops and restarts on
the same port, or freezes with SIGSTOP, under a real gateway and a real platform simulator.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.queue.answers import STORE_DOWN_MESSAGE
from gateway.queue.events import SessionReady
from gateway.redis.client import COMMAND_TIMEOUT_SECONDS, open_redis
from tests.harness.redis_process import RedisProcess
from tests.harness.stack import base_config, body_of, conversation_id_of, start_stack

pytestmark = pytest.mark.redis

TIMEOUT = 10
#: Longest a request may take to be refused while Redis hangs: the command timeout plus scheduling slack.
HUNG_ANSWER_SECONDS = COMMAND_TIMEOUT_SECONDS + 3


@pytest.fixture
def redis_proc():
    """This module's own Redis is persistent (AOF, ``appendfsync always``): a restart keeps what was acknowledged."""
    server = RedisProcess(persistent=True)
    server.start()
    yield server
    server.close()


@pytest.fixture
async def stack(redis_proc):
    client = open_redis(redis_proc.url)
    stack = await start_stack(client, config=base_config(cap=2))
    yield stack
    await stack.close()
    await client.aclose()


def assert_unavailable(response):
    assert response.code == 503, (response.code, response.body)
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["Content-Type"].startswith("application/json")
    assert body_of(response)["message"]


async def wait_ready(stack, timeout: float = TIMEOUT) -> None:
    """Poll ``/readyz`` until the gateway says it reaches the store again (no test-side reconnect)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await stack.call("GET", "/readyz")
        if response.code == 200:
            return
        assert time.monotonic() < deadline, f"gateway not ready {timeout} s after Redis came back"
        await asyncio.sleep(0.05)


async def fill(stack):
    """Two admitted sessions (the cap) and two queued requests."""
    admitted = [body_of(await stack.request_session()) for _ in range(2)]
    assert all("webSocketUrl" in a for a in admitted)
    queued = [body_of(await stack.request_session()) for _ in range(2)]
    assert [q["queuePosition"] for q in queued] == [1, 2]
    return [conversation_id_of(a["webSocketUrl"]) for a in admitted], [q["uniqueRequestId"] for q in queued]


async def test_a_redis_restart_refuses_with_503_then_recovers_without_losing_anything(stack, redis_proc):
    conversations, waiting = await fill(stack)
    first_ready = stack.outcome(waiting[0])

    redis_proc.stop()
    refused = await stack.request_session()
    assert_unavailable(refused)
    assert body_of(refused) == {"message": STORE_DOWN_MESSAGE}
    assert_unavailable(await stack.call("GET", "/readyz"))
    assert_unavailable(await stack.call("GET", f"/api/session/status/{waiting[0]}"))
    # The platform's webhook during the outage is refused, so that the platform retries it later.
    assert_unavailable(await stack.end(conversations[0]))
    assert not first_ready.done()

    redis_proc.start()
    await wait_ready(stack)
    # Everything acknowledged before the outage is still there, and no slot leaked or was freed twice.
    counts = await stack.gateway.store.counts()
    assert (counts["active"], counts["pending"], counts["queued"]) == (2, 0, 2)
    for position, request_id in enumerate(waiting, start=1):
        status = await stack.call("GET", f"/api/session/status/{request_id}")
        assert body_of(status) == {"status": "queued", "queuePosition": position}

    # The webhook retried after recovery frees the slot, and the dispatcher serves the head of the queue.
    assert (await stack.end(conversations[0])).code == 200
    assert isinstance(await asyncio.wait_for(first_ready, TIMEOUT), SessionReady)
    second_ready = stack.outcome(waiting[1])
    assert (await stack.end(conversations[1])).code == 200
    assert isinstance(await asyncio.wait_for(second_ready, TIMEOUT), SessionReady)
    counts = await stack.gateway.store.counts()
    assert (counts["active"], counts["pending"], counts["queued"]) == (2, 0, 0)
    # New clients are served normally again: the cap is full, so the next one waits in line.
    after = await stack.request_session()
    assert (after.code, body_of(after)["queuePosition"]) == (202, 1)
    assert len(stack.sim.calls) == 4  # each queued request reached the platform exactly once


async def test_the_dispatcher_resumes_by_itself_when_capacity_freed_during_the_outage(stack, redis_proc):
    # A session that ends while Redis is down is only learnt from the retried webhook; the queue entry
    # waits through the outage and is served by the dispatcher's own loop once the store is back.
    conversations, waiting = await fill(stack)
    ready = stack.outcome(waiting[0])
    redis_proc.stop()
    stack.gateway.dispatcher.kick()  # a claim round during the outage fails and must not kill the loop
    assert_unavailable(await stack.end(conversations[0]))
    redis_proc.start()
    await wait_ready(stack)
    assert (await stack.end(conversations[0])).code == 200
    assert isinstance(await asyncio.wait_for(ready, TIMEOUT), SessionReady)
    assert stack.gateway.dispatcher.running


@pytest.mark.slow
async def test_a_hung_redis_gives_503_within_the_client_timeouts_and_recovers(stack, redis_proc):
    conversations, waiting = await fill(stack)
    redis_proc.pause()
    try:
        started = time.monotonic()
        responses = await asyncio.gather(stack.request_session(), stack.call("GET", "/readyz"),
                                         stack.call("GET", f"/api/session/status/{waiting[0]}"))
        elapsed = time.monotonic() - started
    finally:
        redis_proc.resume()
    for response in responses:
        assert_unavailable(response)
    assert elapsed < HUNG_ANSWER_SECONDS, f"answers took {elapsed:.1f} s while Redis hung"
    await wait_ready(stack)
    counts = await stack.gateway.store.counts()
    # The request refused while Redis hung may still have been decided by Redis after SIGCONT (it was
    # written before the timeout): then it is queued behind the others, never admitted. Only read-only
    # calls went with it, so nothing else may have changed.
    assert (counts["active"], counts["pending"]) == (2, 0)
    assert counts["queued"] in (2, 3)
    ready = stack.outcome(waiting[0])
    assert (await stack.end(conversations[0])).code == 200
    assert isinstance(await asyncio.wait_for(ready, TIMEOUT), SessionReady)


async def test_a_session_created_during_a_long_outage_is_recorded_not_created_twice(redis_proc):
    # The dispatcher gets a platform session for a queued client while Redis is down, and Redis stays down
    # for longer than the pending lease. When it comes back, the claim is held for one more lease
    # duration, the dispatcher records its session, and the client gets that one: the platform sees one
    # initiate for it, not two.
    clock_offset = [0.0]

    def clock() -> float:
        return time.time() + clock_offset[0]

    client = open_redis(redis_proc.url)
    config = base_config(cap=1)
    config["Concurrency"]["PendingLeaseSeconds"] = 10
    stack = await start_stack(client, config=config, clock=clock)
    try:
        first = body_of(await stack.request_session())
        waiting = body_of(await stack.request_session())
        ready = stack.outcome(waiting["uniqueRequestId"])
        platform = stack.gateway.platform
        original = platform.initiate
        calling, gate = asyncio.Event(), asyncio.Event()
        initiates = []

        async def gated_initiate(*args, **kwargs):
            initiates.append(args)
            calling.set()
            await gate.wait()
            return await original(*args, **kwargs)

        platform.initiate = gated_initiate
        assert (await stack.end(conversation_id_of(first["webSocketUrl"]))).code == 200
        await asyncio.wait_for(calling.wait(), TIMEOUT)
        redis_proc.stop()
        gate.set()  # the platform creates the session; recording it fails while Redis is down
        clock_offset[0] = 60.0  # the outage outlasts the pending lease (10 s) by far
        redis_proc.start()
        event = await asyncio.wait_for(ready, 30)
        assert isinstance(event, SessionReady)
        assert len(initiates) == 1
        checker = open_redis(redis_proc.url)  # a connection of its own: the gateway's pool may hold stale ones
        try:
            assert await checker.zcard(stack.gateway.store.keys.active) == 1  # the session was recorded
        finally:
            await checker.aclose()
    finally:
        gate.set()
        await stack.close()
        await client.aclose()
