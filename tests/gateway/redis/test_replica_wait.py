"""``Redis.WaitForReplicas``: the gateway acts on the writes that matter only once a replica has them.

Real processes: a primary, a replica and three sentinels (:mod:`tests.harness.sentinel`). A replica frozen with
SIGSTOP sends no acknowledgements, so a write waits for it; a killed primary shows what the wait buys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.redis.client import open_redis
from tests.harness.sentinel import SentinelDeployment
from tests.harness.stack import Stack, base_config, start_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def deployment() -> Iterator[SentinelDeployment]:
    started = SentinelDeployment()
    try:
        started.start()
        yield started
    finally:
        started.replica.resume()
        started.close()


async def _stack(deployment: SentinelDeployment, timeout_ms: int) -> tuple[Stack, aioredis.Redis]:
    config = base_config(Redis={"WaitForReplicas": 1, "WaitTimeoutMilliseconds": timeout_ms})
    config["RedisConnectionString"] = deployment.url
    client = open_redis(deployment.url)
    return await start_stack(client, config=config), client


async def _fill(stack: Stack) -> None:
    for _ in range(2):
        response = await stack.request_session()
        assert response.code == 200, response.body  # a healthy replica: the waits end at once


async def _until(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(0.01)


async def test_an_admission_is_answered_only_once_a_replica_has_it(deployment: SentinelDeployment) -> None:
    stack, client = await _stack(deployment, timeout_ms=4000)
    primary = aioredis.Redis(port=deployment.primary.port)
    try:
        await _fill(stack)
        queue = stack.gateway.store.keys.queue
        deployment.replica.pause()
        answer = asyncio.create_task(stack.request_session())
        # The primary has queued the request, and still the visitor has no answer: the replica has not got it.
        await _until(lambda: primary.exists(queue), "the admission on the primary")
        assert not answer.done()
        deployment.replica.resume()
        response = await asyncio.wait_for(answer, 3.0)  # well within the 4 s wait: the acknowledgement ended it
        assert response.code == 202 and json.loads(response.body)["queuePosition"] == 1
        assert stack.gateway.replica_wait.short == 0
    finally:
        await stack.close()
        await client.aclose()
        await primary.aclose()


async def test_a_replica_that_does_not_answer_delays_the_gateway_but_does_not_stop_it(
        deployment: SentinelDeployment, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.redis.replication")
    stack, client = await _stack(deployment, timeout_ms=100)
    try:
        await _fill(stack)
        deployment.replica.pause()
        for position in (1, 2):
            response = await stack.request_session()
            assert response.code == 202 and json.loads(response.body)["queuePosition"] == position
        assert stack.gateway.replica_wait.short >= 2
        lagging = [r for r in caplog.records if r.name == "gateway.redis.replication" and r.levelno == logging.WARNING]
        assert len(lagging) == 1, [r.getMessage() for r in lagging]  # said once, not per write
        deployment.replica.resume()
        await _until(lambda: _acknowledging_again(stack, caplog), "replicas acknowledging again")
    finally:
        await stack.close()
        await client.aclose()


async def _acknowledging_again(stack: Stack, caplog: pytest.LogCaptureFixture) -> bool:
    assert (await stack.request_session()).code == 202
    return any("acknowledge writes again" in r.getMessage() for r in caplog.records)


async def test_a_primary_lost_during_the_wait_answers_503_and_the_retry_is_served_by_the_new_one(
        deployment: SentinelDeployment) -> None:
    stack, client = await _stack(deployment, timeout_ms=4000)
    primary = aioredis.Redis(port=deployment.primary.port)
    try:
        await _fill(stack)
        deployment.replica.pause()
        answer = asyncio.create_task(stack.request_session())
        await _until(lambda: primary.exists(stack.gateway.store.keys.queue), "the admission on the primary")
        await primary.aclose()
        old_port = deployment.kill_primary()
        response = await asyncio.wait_for(answer, 5.0)
        # Not a 202 for an entry the replica may not have: the visitor is told to try again.
        assert response.code == 503 and int(response.headers["Retry-After"]) > 0, response.body
        deployment.replica.resume()
        await asyncio.to_thread(deployment.wait_for_new_primary, old_port)
        await _until(lambda: _served(stack), "a request served by the new primary", timeout=30.0)
    finally:
        await stack.close()
        await client.aclose()
        await primary.aclose()


async def _served(stack: Stack) -> bool:
    response = await stack.request_session()
    assert response.code in (202, 503), response.body
    return response.code == 202


async def test_with_min_replicas_to_write_the_gateway_answers_503_while_the_replica_is_gone(
        deployment: SentinelDeployment) -> None:
    # Redis's own hard guarantee, set on the primary: writes are refused while no replica is in reach. The
    # gateway needs nothing for it: the refusal is a store error, answered 503 with Retry-After.
    config = base_config()
    config["RedisConnectionString"] = deployment.url
    client = open_redis(deployment.url)
    stack = await start_stack(client, config=config)
    primary = aioredis.Redis(port=deployment.primary.port)
    try:
        await primary.config_set("min-replicas-max-lag", 1)
        await primary.config_set("min-replicas-to-write", 1)
        await _fill(stack)
        deployment.replica.pause()

        async def refused() -> bool:
            response = await stack.request_session()
            assert response.code in (202, 503), response.body
            if response.code == 503:
                assert int(response.headers["Retry-After"]) > 0 and json.loads(response.body)["message"]
            return response.code == 503

        await _until(refused, "a write refused for want of replicas")
        deployment.replica.resume()

        async def queued() -> bool:
            response = await stack.request_session()
            assert response.code in (202, 503), response.body
            return response.code == 202

        await _until(queued, "writes accepted again with the replica back")
    finally:
        await stack.close()
        await client.aclose()
        await primary.aclose()
