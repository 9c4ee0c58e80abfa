"""The direct script path on the gateway's own pool (``gateway.redis.client.run_script``), on a real Redis:
bounded connections with waiting callers, no reply ever read by the wrong caller, reload after a flush."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from gateway.redis.client import open_redis, run_script

pytestmark = pytest.mark.redis

ECHO = "return ARGV[1]"
COUNT = "return redis.call('INCR', KEYS[1])"


@pytest.fixture
async def small_pool_client(redis_proc):
    client = open_redis(redis_proc.url, pool_size=2)
    yield client
    await client.aclose()


async def test_many_callers_share_a_small_pool_and_each_gets_its_own_reply(small_pool_client):
    echo = small_pool_client.register_script(ECHO)
    count = small_pool_client.register_script(COUNT)
    replies = await asyncio.gather(*(run_script(small_pool_client, echo, [], [f"caller-{i}"]) for i in range(60)))
    assert replies == [f"caller-{i}".encode() for i in range(60)]
    counts = await asyncio.gather(*(run_script(small_pool_client, count, ["n"], []) for _ in range(40)))
    assert sorted(counts) == list(range(1, 41))
    pool = small_pool_client.connection_pool
    assert len(pool._in_use_connections) == 0
    assert len(pool._available_connections) <= 2


async def test_a_caller_cancelled_while_waiting_for_its_reply_leaves_no_reply_behind(redis_proc, small_pool_client):
    echo = small_pool_client.register_script(ECHO)
    await run_script(small_pool_client, echo, [], ["warm"])
    redis_proc.pause()  # the command is sent, the reply will come only after the cancellation
    try:
        pending = asyncio.ensure_future(run_script(small_pool_client, echo, [], ["stale"]))
        # Wait until the command has gone out: the connection is checked out, so nothing is idle.
        pool = small_pool_client.connection_pool
        for _ in range(1000):
            if pool._in_use_connections:
                break
            await asyncio.sleep(0)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
    finally:
        redis_proc.resume()
    # Every later caller reads its own reply, never the cancelled caller's "stale".
    replies = await asyncio.gather(*(run_script(small_pool_client, echo, [], [f"fresh-{i}"]) for i in range(6)))
    assert replies == [f"fresh-{i}".encode() for i in range(6)]


async def test_a_flushed_script_is_loaded_again_once(small_pool_client):
    echo = small_pool_client.register_script(ECHO)
    assert await run_script(small_pool_client, echo, [], ["one"]) == b"one"
    await small_pool_client.script_flush()
    assert await run_script(small_pool_client, echo, [], ["two"]) == b"two"


async def test_an_error_reply_is_raised_and_the_connection_stays_usable(small_pool_client):
    failing = small_pool_client.register_script("return redis.error_reply('DUPLICATE no')")
    echo = small_pool_client.register_script(ECHO)
    with pytest.raises(ResponseError, match="DUPLICATE"):
        await run_script(small_pool_client, failing, [], [])
    assert await run_script(small_pool_client, echo, [], ["after"]) == b"after"
