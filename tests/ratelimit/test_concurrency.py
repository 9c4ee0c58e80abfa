"""Atomicity: many parallel acquires against a small limit admit exactly the limit, never more or fewer.

On real Redis the callers use separate pooled connections (and two limiter instances, as two gateway
nodes would), so the script calls really interleave on the server; the embedded store runs the same Lua.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest
import redis.asyncio

from ratelimit import Policy, RateLimiter, Rule, rules_for

T0 = 1_700_000_000.0
CALLERS = 100
LIMIT = 5
TIMEOUT = 30


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "embedded"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[object, object]]:
    """Two clients on one store, standing in for two gateway nodes."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        clients = (redis.asyncio.Redis.from_url(url), redis.asyncio.Redis.from_url(url))
    else:
        server = fakeredis.FakeServer()
        clients = (fakeredis.FakeAsyncRedis(server=server), fakeredis.FakeAsyncRedis(server=server))
    yield clients
    for client in clients:
        await client.aclose()


def limiters(stores: tuple[object, object]) -> tuple[RateLimiter, RateLimiter]:
    return tuple(RateLimiter(store, clock=lambda: T0) for store in stores)  # type: ignore[return-value]


async def acquire_all(stores: tuple[object, object], rules_of: list[tuple[Rule, ...]]) -> list[bool]:
    nodes = limiters(stores)
    calls = [nodes[i % 2].acquire(f"unit-{i}", rules, hold_seconds=60) for i, rules in enumerate(rules_of)]
    decisions = await asyncio.wait_for(asyncio.gather(*calls), TIMEOUT)
    return [decision.allowed for decision in decisions]


async def test_parallel_acquires_against_a_concurrency_limit_admit_exactly_the_limit(
    stores: tuple[object, object],
) -> None:
    rules = rules_for(client_key="id:a", ip="10.0.0.1", hourly=0, daily=0, concurrency=LIMIT)
    admitted = await acquire_all(stores, [rules] * CALLERS)
    assert admitted.count(True) == LIMIT
    # And the count returns to zero once every admitted unit is released.
    node = limiters(stores)[0]
    await asyncio.gather(*(node.release(f"unit-{i}", rules) for i, ok in enumerate(admitted) if ok))
    assert await stores[0].exists(node.key_for(rules[0])) == 0  # type: ignore[attr-defined]


async def test_parallel_acquires_against_a_window_admit_exactly_the_limit(stores: tuple[object, object]) -> None:
    rules = (Rule(policy=Policy.HOURLY, subject="client:id:a", limit=LIMIT),
             Rule(policy=Policy.DAILY, subject="client:id:a", limit=1000))
    admitted = await acquire_all(stores, [rules] * CALLERS)
    assert admitted.count(True) == LIMIT
    # The refused ones left no daily hit behind.
    assert await stores[1].zcard(limiters(stores)[1].key_for(rules[1])) == LIMIT  # type: ignore[attr-defined]


async def test_rotating_identifiers_does_not_escape_a_per_ip_limit(stores: tuple[object, object]) -> None:
    rules_of = [
        rules_for(client_key=f"id:{i}", ip="10.0.0.1", hourly=10, daily=10, concurrency=1, per_ip_concurrency=LIMIT)
        for i in range(CALLERS)
    ]
    admitted = await acquire_all(stores, rules_of)
    assert admitted.count(True) == LIMIT
