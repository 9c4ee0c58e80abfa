"""RateLimiter against a real redis-server and the embedded store (fakeredis running the same Lua).

Time is injected: every test drives a :class:`StepClock`, so window edges are hit to the millisecond.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import ratelimit
from ratelimit import (
    Decision,
    InvalidRule,
    Policy,
    RateLimiter,
    Rule,
    RuleState,
    StorageError,
    refusal_message,
    rules_for,
)
from ratelimit.limiter import KEY_EXPIRY_SLACK_MS
from ratelimit.rules import HITS_HISTORY_SECONDS
from tests.harness.redis_process import free_port

T0 = 1_700_000_000.0
HOUR = 3600
DAY = 86400
SLACK = KEY_EXPIRY_SLACK_MS


class StepClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def at(self, offset: float) -> None:
        self.now = T0 + offset


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "embedded"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    if request.param == "redis":
        client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
    else:
        client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def limiter(store: object, clock: StepClock) -> RateLimiter:
    return RateLimiter(store, clock=clock)


def hourly(limit: int, subject: str = "client:id:a") -> Rule:
    return Rule(policy=Policy.HOURLY, subject=subject, limit=limit)


def daily(limit: int, subject: str = "client:id:a") -> Rule:
    return Rule(policy=Policy.DAILY, subject=subject, limit=limit)


def concurrent(limit: int, subject: str = "client:id:a") -> Rule:
    return Rule(policy=Policy.CONCURRENT, subject=subject, limit=limit)


def used(decision: Decision) -> list[int]:
    return [state.used for state in decision.states]


# --- sliding windows -------------------------------------------------------------------------------------


async def test_a_hit_counts_until_exactly_one_window_later(limiter: RateLimiter, clock: StepClock) -> None:
    rules = [hourly(1)]
    assert (await limiter.acquire("u1", rules, hold_seconds=60)).allowed
    clock.at(HOUR - 0.001)
    late = await limiter.acquire("u2", rules, hold_seconds=60)
    assert not late.allowed
    assert used(late) == [1]
    assert late.retry_after_seconds == 1  # 1 ms left, rounded up
    clock.at(HOUR)
    edge = await limiter.acquire("u3", rules, hold_seconds=60)
    assert edge.allowed
    assert used(edge) == [1]


async def test_window_counts_are_exact_at_each_hits_edge(limiter: RateLimiter, clock: StepClock) -> None:
    rules = [hourly(2)]
    assert (await limiter.acquire("u1", rules, hold_seconds=60)).allowed
    clock.at(10)
    assert used(await limiter.acquire("u2", rules, hold_seconds=60)) == [2]
    clock.at(HOUR + 10 - 0.001)  # u1 left, u2 has 1 ms to go
    third = await limiter.acquire("u3", rules, hold_seconds=60)
    assert third.allowed and used(third) == [2]
    fourth = await limiter.acquire("u4", rules, hold_seconds=60)
    assert not fourth.allowed and fourth.retry_after_seconds == 1
    clock.at(HOUR + 10)
    assert (await limiter.acquire("u4", rules, hold_seconds=60)).allowed


async def test_retry_after_is_when_the_oldest_hit_leaves_rounded_up(limiter: RateLimiter, clock: StepClock) -> None:
    rules = [hourly(2)]
    await limiter.acquire("u1", rules, hold_seconds=60)
    clock.at(100)
    await limiter.acquire("u2", rules, hold_seconds=60)
    clock.at(1000)
    refused = await limiter.acquire("u3", rules, hold_seconds=60)
    assert (refused.allowed, refused.refused, refused.retry_after_seconds) == (False, rules[0], HOUR - 1000)
    assert refused.states[0].remaining == 0 and refused.states[0].reset_seconds == HOUR - 1000
    clock.at(1000.5)
    assert (await limiter.acquire("u3", rules, hold_seconds=60)).retry_after_seconds == HOUR - 1000  # 2599.5 -> 2600
    # The announced moment is never early: the oldest hit still counts 1 ms before it leaves at 3600.
    clock.at(HOUR - 0.001)
    assert not (await limiter.acquire("u3", rules, hold_seconds=60)).allowed
    clock.at(1000.5 + HOUR - 1000)
    assert (await limiter.acquire("u3", rules, hold_seconds=60)).allowed


async def test_retry_after_waits_for_enough_hits_when_over_a_lowered_limit(
    limiter: RateLimiter, clock: StepClock
) -> None:
    for offset, unit in ((0, "u1"), (10, "u2"), (20, "u3")):
        clock.at(offset)
        assert (await limiter.acquire(unit, [hourly(3)], hold_seconds=60)).allowed
    clock.at(30)
    refused = await limiter.acquire("u4", [hourly(2)], hold_seconds=60)
    # Two hits must leave before a third fits under 2: the second leaves at 10 + 3600.
    assert refused.retry_after_seconds == HOUR + 10 - 30
    assert refused.states[0].used == 3 and refused.states[0].remaining == 0


async def test_several_refusing_rules_give_the_longest_wait(limiter: RateLimiter, clock: StepClock) -> None:
    rules = [concurrent(5), hourly(1), daily(1)]
    await limiter.acquire("u1", rules, hold_seconds=60)
    clock.at(600)
    refused = await limiter.acquire("u2", rules, hold_seconds=60)
    assert not refused.allowed
    assert refused.refused == rules[2]
    assert refused.retry_after_seconds == DAY - 600


async def test_an_empty_window_resets_after_a_whole_window(limiter: RateLimiter) -> None:
    decision = await limiter.acquire("u1", [hourly(2), daily(3)], hold_seconds=60)
    assert [(s.used, s.remaining, s.reset_seconds) for s in decision.states] == [(1, 1, HOUR), (1, 2, DAY)]


async def test_windows_can_be_custom_lengths(limiter: RateLimiter, clock: StepClock) -> None:
    rule = Rule(policy=Policy.HOURLY, subject="client:x", limit=1, window_seconds=60)
    await limiter.acquire("u1", [rule], hold_seconds=5)
    clock.at(59.999)
    assert not (await limiter.acquire("u2", [rule], hold_seconds=5)).allowed
    clock.at(60)
    assert (await limiter.acquire("u2", [rule], hold_seconds=5)).allowed


# --- all-or-nothing --------------------------------------------------------------------------------------


async def test_a_refusing_daily_rule_consumes_no_hourly_hit_and_no_concurrent_unit(
    limiter: RateLimiter, store: redis.asyncio.Redis, clock: StepClock
) -> None:
    rules = [concurrent(5), hourly(5), daily(1)]
    await limiter.acquire("u1", rules, hold_seconds=60)
    await limiter.release("u1", rules)
    clock.at(1)
    refused = await limiter.acquire("u2", rules, hold_seconds=60)
    assert not refused.allowed and refused.refused == rules[2]
    assert refusal_message(refused.refused, by_client_identifier=True) == "Daily rate limit exceeded."
    assert used(refused) == [0, 1, 1]
    assert await store.exists(limiter.key_for(rules[0])) == 0
    assert await store.zrange(limiter.key_for(rules[1]), 0, -1) == [b"u1"]


async def test_a_refusing_per_ip_rule_consumes_nothing_for_the_client(
    limiter: RateLimiter, store: redis.asyncio.Redis
) -> None:
    first = rules_for(client_key="id:a", ip="10.0.0.1", hourly=10, daily=10, concurrency=10, per_ip_concurrency=1)
    second = rules_for(client_key="id:b", ip="10.0.0.1", hourly=10, daily=10, concurrency=10, per_ip_concurrency=1)
    assert (await limiter.acquire("u1", first, hold_seconds=60)).allowed
    refused = await limiter.acquire("u2", second, hold_seconds=60)
    assert not refused.allowed
    assert refused.refused == Rule(policy=Policy.CONCURRENT, subject="ip:10.0.0.1", limit=1)
    assert refusal_message(refused.refused, by_client_identifier=True) == "Too many concurrent sessions from your IP."
    assert used(refused) == [0, 0, 0, 1]
    for rule in second[:3]:
        assert await store.exists(limiter.key_for(rule)) == 0


# --- concurrent units ------------------------------------------------------------------------------------


async def test_release_returns_the_count_to_zero_and_keeps_the_hits(
    limiter: RateLimiter, store: redis.asyncio.Redis
) -> None:
    rules = [concurrent(1), hourly(5)]
    assert used(await limiter.acquire("u1", rules, hold_seconds=60)) == [1, 1]
    assert not (await limiter.acquire("u2", rules, hold_seconds=60)).allowed
    await limiter.release("u1", rules)
    await limiter.release("u1", rules)  # a duplicate webhook changes nothing
    assert await store.exists(limiter.key_for(rules[0])) == 0
    assert used(await limiter.acquire("u2", rules, hold_seconds=60)) == [1, 2]


async def test_an_unreleased_unit_expires_by_itself(limiter: RateLimiter, clock: StepClock) -> None:
    rules = [concurrent(1)]
    await limiter.acquire("u1", rules, hold_seconds=30)
    clock.at(29.999)
    waiting = await limiter.acquire("u2", rules, hold_seconds=30)
    assert not waiting.allowed and waiting.retry_after_seconds == 1
    message = refusal_message(waiting.refused, by_client_identifier=True)
    assert message == "Too many concurrent sessions for this client."
    assert refusal_message(waiting.refused, by_client_identifier=False) == "Too many concurrent sessions from your IP."
    clock.at(30)
    assert used(await limiter.acquire("u2", rules, hold_seconds=30)) == [1]


async def test_refund_undoes_everything(limiter: RateLimiter, store: redis.asyncio.Redis) -> None:
    rules = [concurrent(1), hourly(1), daily(1)]
    await limiter.acquire("u1", rules, hold_seconds=60)
    await limiter.refund("u1", rules)
    await limiter.refund("u1", rules)
    for rule in rules:
        assert await store.exists(limiter.key_for(rule)) == 0
    assert used(await limiter.acquire("u2", rules, hold_seconds=60)) == [1, 1, 1]


async def test_refund_leaves_other_units_alone(limiter: RateLimiter, clock: StepClock) -> None:
    rules = [concurrent(3), hourly(3)]
    await limiter.acquire("u1", rules, hold_seconds=60)
    await limiter.acquire("u2", rules, hold_seconds=60)
    await limiter.refund("u1", rules)
    assert used(await limiter.acquire("u3", rules, hold_seconds=60)) == [2, 2]


async def test_touch_extends_the_hold(limiter: RateLimiter, store: redis.asyncio.Redis, clock: StepClock) -> None:
    rules = [concurrent(1), hourly(5)]
    await limiter.acquire("u1", rules, hold_seconds=10)
    clock.at(5)
    await limiter.touch("u1", rules, hold_seconds=100)
    clock.at(50)
    refused = await limiter.acquire("u2", rules, hold_seconds=10)
    assert not refused.allowed and refused.retry_after_seconds == 55
    assert used(refused) == [1, 1]  # touch added no hit
    clock.at(105)
    assert (await limiter.acquire("u2", rules, hold_seconds=10)).allowed


async def test_touch_does_not_bring_back_a_released_or_expired_unit(limiter: RateLimiter, clock: StepClock) -> None:
    rules = [concurrent(2)]
    await limiter.acquire("gone", rules, hold_seconds=10)
    await limiter.acquire("late", rules, hold_seconds=10)
    await limiter.release("gone", rules)
    clock.at(10)
    await limiter.touch("gone", rules, hold_seconds=100)
    await limiter.touch("late", rules, hold_seconds=100)
    assert used(await limiter.acquire("u3", rules, hold_seconds=10)) == [1]


async def test_repeating_an_acquire_does_not_count_twice(limiter: RateLimiter) -> None:
    rules = [concurrent(1), hourly(1)]
    assert (await limiter.acquire("u1", rules, hold_seconds=60)).allowed
    again = await limiter.acquire("u1", rules, hold_seconds=60)
    assert again.allowed and used(again) == [1, 1]


# --- keys ------------------------------------------------------------------------------------------------


async def test_keys_expire_when_nothing_in_them_matters(
    limiter: RateLimiter, store: redis.asyncio.Redis, clock: StepClock
) -> None:
    rules = [concurrent(2), hourly(5), daily(5)]
    await limiter.acquire("u1", rules, hold_seconds=120)
    ttls = [await store.pttl(limiter.key_for(rule)) - SLACK for rule in rules]
    assert 115_000 < ttls[0] <= 120_000
    # the subject's hits serve both windows, so they are kept for the longer one
    assert DAY * 1000 - 5000 < ttls[1] <= DAY * 1000
    assert DAY * 1000 - 5000 < ttls[2] <= DAY * 1000
    clock.at(20)
    await limiter.touch("u1", rules, hold_seconds=600)
    assert 595_000 < await store.pttl(limiter.key_for(rules[0])) - SLACK <= 600_000
    # Releasing the newest hold shortens the key's life to the remaining one (u1's, until 20 + 600).
    clock.at(40)
    await limiter.acquire("u2", rules, hold_seconds=3000)
    await limiter.release("u2", rules)
    assert 575_000 < await store.pttl(limiter.key_for(rules[0])) - SLACK <= 580_000


async def test_a_shorter_unit_added_later_never_shortens_the_key(
    limiter: RateLimiter, store: redis.asyncio.Redis, clock: StepClock
) -> None:
    rules = [concurrent(3)]
    key = limiter.key_for(rules[0])
    await limiter.acquire("u1", rules, hold_seconds=3000)
    clock.at(10)
    await limiter.acquire("u2", rules, hold_seconds=60)
    # still u1's (Redis counts the TTL on its own clock, which the injected one does not move)
    assert 2_995_000 < await store.pttl(key) - SLACK <= 3_000_000
    clock.at(20)
    await limiter.acquire("u3", rules, hold_seconds=4000)
    assert 3_995_000 < await store.pttl(key) - SLACK <= 4_000_000  # a later one extends it
    clock.at(3500)
    used_now = used(await limiter.acquire("u4", rules, hold_seconds=1))
    assert used_now == [2]  # u1 and u2 lapsed; u3 and u4 count


async def test_key_prefix_separates_limiters(store: redis.asyncio.Redis, clock: StepClock) -> None:
    one = RateLimiter(store, key_prefix="a:", clock=clock)
    other = RateLimiter(store, key_prefix="b:", clock=clock)
    assert (await one.acquire("u1", [hourly(1)], hold_seconds=1)).allowed
    assert (await other.acquire("u2", [hourly(1)], hold_seconds=1)).allowed
    assert one.key_for(hourly(1)) == "a:hits:client:id:a"


async def test_a_subjects_windows_share_one_set_with_one_member_per_request(
    limiter: RateLimiter, store: redis.asyncio.Redis
) -> None:
    rules = [concurrent(3), hourly(3), daily(3), hourly(3, "ip:1.2.3.4")]
    assert limiter.key_for(rules[1]) == limiter.key_for(rules[2]) == "rl:hits:client:id:a"
    assert used(await limiter.acquire("u1", rules, hold_seconds=60)) == [1, 1, 1, 1]
    assert used(await limiter.acquire("u2", rules, hold_seconds=60)) == [2, 2, 2, 2]
    assert sorted(await store.keys("rl:*")) == [b"rl:concurrent:client:id:a", b"rl:hits:client:id:a",
                                                     b"rl:hits:ip:1.2.3.4"]
    assert await store.zcard("rl:hits:client:id:a") == 2
    await limiter.refund("u2", rules)
    assert await store.zcard("rl:hits:client:id:a") == 1
    assert used(await limiter.acquire("u3", rules, hold_seconds=60)) == [2, 2, 2, 2]


async def test_a_call_with_fewer_windows_keeps_the_history_of_longer_ones(
    limiter: RateLimiter, clock: StepClock
) -> None:
    # A node configured with only an hourly limit (a rollout in progress) must not trim the hits another
    # node's daily limit still counts.
    assert (await limiter.acquire("u1", [hourly(5), daily(3)], hold_seconds=1)).allowed
    clock.at(2 * HOUR)
    assert used(await limiter.acquire("u2", [hourly(5)], hold_seconds=1)) == [1]
    clock.at(3 * HOUR)
    decision = await limiter.acquire("u3", [hourly(5), daily(3)], hold_seconds=1)
    assert used(decision) == [1, 3]
    refused = await limiter.acquire("u4", [hourly(5), daily(3)], hold_seconds=1)
    assert not refused.allowed and refused.refused == daily(3)
    # u1 (at 0) leaves the day first: exactly one day after it, counted from now (3 h)
    assert refused.retry_after_seconds == DAY - 3 * HOUR
    clock.at(DAY)  # u1's hit has just left the day
    assert used(await limiter.acquire("u5", [hourly(5), daily(3)], hold_seconds=1)) == [1, 3]


async def test_retry_after_counts_only_the_hits_inside_the_window(limiter: RateLimiter, clock: StepClock) -> None:
    rules = [hourly(2), daily(10)]
    for at, unit in ((0, "u1"), (1800, "u2"), (3700, "u3")):
        clock.at(at)
        assert (await limiter.acquire(unit, rules, hold_seconds=1)).allowed
    clock.at(3701)
    refused = await limiter.acquire("u4", rules, hold_seconds=1)
    assert used(refused) == [2, 3] and refused.refused == hourly(2)
    # u1 is still in the day's hits but not in the hour: the hour frees up when u2 (at 1800) leaves it
    assert refused.retry_after_seconds == 1800 + HOUR - 3701


def test_the_scripts_keep_hits_as_long_as_the_rules_say() -> None:
    library = (Path(ratelimit.__file__).parent / "lua" / "lib_units.lua").read_text()
    match = re.search(r"^local UNITS_HISTORY_MS = (\d+)$", library, re.MULTILINE)
    assert match and int(match.group(1)) == HITS_HISTORY_SECONDS * 1000


async def test_scripts_are_reloaded_after_script_flush(limiter: RateLimiter, store: redis.asyncio.Redis) -> None:
    rules = [concurrent(2), hourly(2)]
    await limiter.acquire("u1", rules, hold_seconds=60)
    await store.script_flush()
    assert used(await limiter.acquire("u2", rules, hold_seconds=60)) == [2, 2]
    await store.script_flush()
    await limiter.touch("u2", rules, hold_seconds=60)
    await store.script_flush()
    await limiter.refund("u2", rules)
    assert used(await limiter.acquire("u3", rules, hold_seconds=60)) == [2, 2]


# --- bad input and failures ------------------------------------------------------------------------------


async def test_no_rules_admits_without_a_call(clock: StepClock) -> None:
    limiter = RateLimiter(_NoScripts(), clock=clock)
    assert await limiter.acquire("u1", (), hold_seconds=1) == Decision(
        allowed=True, refused=None, retry_after_seconds=None, states=()
    )
    await limiter.release("u1", [hourly(1)])  # no concurrent rule: nothing to do
    await limiter.touch("u1", [hourly(1)], hold_seconds=1)


class _NoScripts:
    """A client whose scripts fail the test if ever run."""

    def register_script(self, text: str) -> object:
        async def run(**_: object) -> object:
            raise AssertionError("the store was called")

        return run


@pytest.mark.parametrize(
    ("unit", "rules", "hold", "message"),
    [
        ("", [hourly(1)], 1, "unit_id"),
        ("u", [hourly(1)], 0, "hold_seconds"),
        ("u", [hourly(1)], float("nan"), "hold_seconds"),
        ("u", [hourly(1), hourly(2)], 1, "share a policy and subject"),
        ("u", ["hourly"], 1, "expected a Rule"),
    ],
)
async def test_bad_arguments_are_refused_clearly(
    limiter: RateLimiter, unit: str, rules: list[Rule], hold: float, message: str
) -> None:
    with pytest.raises(InvalidRule, match=message):
        await limiter.acquire(unit, rules, hold_seconds=hold)


async def test_a_dead_store_raises_storage_error(clock: StepClock) -> None:
    # No retries: the point is the error type, not redis-py's reconnect backoff.
    client = redis.asyncio.Redis(
        host="127.0.0.1", port=free_port(), socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    try:
        limiter = RateLimiter(client, clock=clock)
        with pytest.raises(StorageError) as caught:
            await limiter.acquire("u1", [hourly(1)], hold_seconds=1)
        assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
    finally:
        await client.aclose()


@pytest.mark.parametrize("reply", [[1, 1], [1, 1, "soon", 0], None])
async def test_a_malformed_script_reply_raises_storage_error(clock: StepClock, reply: object) -> None:
    class Garbled:
        def register_script(self, text: str) -> object:
            async def run(**_: object) -> object:
                return reply

            return run

    with pytest.raises(StorageError, match="unexpected reply"):
        await RateLimiter(Garbled(), clock=clock).acquire("u1", [hourly(1)], hold_seconds=1)


# --- pure rule helpers -----------------------------------------------------------------------------------


def test_rules_for_leaves_out_unlimited_and_orders_client_then_ip() -> None:
    rules = rules_for(client_key="id:a", ip="1.2.3.4", hourly=3, daily=0, concurrency=1, per_ip_daily=50)
    assert rules == (
        Rule(policy=Policy.CONCURRENT, subject="client:id:a", limit=1),
        Rule(policy=Policy.HOURLY, subject="client:id:a", limit=3, window_seconds=HOUR),
        Rule(policy=Policy.DAILY, subject="ip:1.2.3.4", limit=50, window_seconds=DAY),
    )
    assert rules_for(client_key="k", ip="", hourly=0, daily=0, concurrency=0) == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hourly": -1}, "hourly must be a non-negative integer"),
        ({"per_ip_concurrency": 1.5}, "per_ip_concurrency must be a non-negative integer"),
        ({"client_key": ""}, "client_key must not be empty"),
        ({"ip": "", "per_ip_hourly": 1}, "per_ip_hourly is set but the key for it is empty"),
    ],
)
def test_rules_for_rejects_bad_settings(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"client_key": "k", "ip": "1.2.3.4", "hourly": 1, "daily": 1, "concurrency": 1}
    arguments.update(kwargs)
    with pytest.raises(InvalidRule, match=message):
        rules_for(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "weekly"}, "unknown rate-limit policy"),
        ({"subject": ""}, "non-empty subject"),
        ({"limit": 0}, "limit must be a positive integer"),
        ({"limit": True}, "limit must be a positive integer"),
        ({"window_seconds": 0}, "window must be a whole number of seconds from 1 to 86400"),
        ({"window_seconds": 86401}, "hits are kept for a day"),
        ({"policy": Policy.CONCURRENT, "window_seconds": 60}, "concurrent rate-limit rule has no window"),
    ],
)
def test_rule_rejects_inconsistent_fields(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"policy": Policy.HOURLY, "subject": "client:a", "limit": 1}
    fields.update(kwargs)
    with pytest.raises(InvalidRule, match=message):
        Rule(**fields)  # type: ignore[arg-type]


def test_rule_accepts_a_policy_name_and_fills_the_default_window() -> None:
    assert Rule(policy="daily", subject="ip:x", limit=2) == daily(2, "ip:x")  # type: ignore[arg-type]
    assert daily(2).window_seconds == DAY


def test_refusal_messages() -> None:
    assert refusal_message(hourly(1), by_client_identifier=True) == "Hourly rate limit exceeded."
    assert refusal_message(daily(1, "ip:1.2.3.4"), by_client_identifier=False) == "Daily rate limit exceeded."
    assert refusal_message(concurrent(1, "ip:1.2.3.4"), by_client_identifier=True) == (
        "Too many concurrent sessions from your IP."
    )


# --- model check -----------------------------------------------------------------------------------------

MODEL_RULES = (
    concurrent(2),
    Rule(policy=Policy.HOURLY, subject="client:m", limit=3, window_seconds=10),
    Rule(policy=Policy.DAILY, subject="client:m", limit=4, window_seconds=25),
)


class SlidingModel:
    """The limiter's contract, in plain Python: one dict of member -> score per rule."""

    def __init__(self) -> None:
        self.sets: list[dict[str, int]] = [{} for _ in MODEL_RULES]

    @staticmethod
    def _window_ms(rule: Rule) -> int:
        return (rule.window_seconds or 0) * 1000

    def _drop(self, now: int) -> None:
        for rule, members in zip(MODEL_RULES, self.sets, strict=True):
            for unit in [unit for unit, score in members.items() if score <= now - self._window_ms(rule)]:
                del members[unit]

    def acquire(self, unit: str, now: int, hold: int) -> Decision:
        self._drop(now)
        refused = [unit not in s and len(s) >= r.limit for r, s in zip(MODEL_RULES, self.sets, strict=True)]
        if not any(refused):
            for rule, members in zip(MODEL_RULES, self.sets, strict=True):
                members[unit] = now if rule.policy.is_window else now + hold
        states, worst, retry = [], None, None
        for rule, members, refusing in zip(MODEL_RULES, self.sets, refused, strict=True):
            scores = sorted(members.values())
            wait = self._window_ms(rule)
            if scores:
                wait = scores[max(0, len(scores) - rule.limit)] + self._window_ms(rule) - now
            seconds = -(-wait // 1000)
            states.append(RuleState(rule=rule, used=len(scores), remaining=max(0, rule.limit - len(scores)),
                                    reset_seconds=seconds))
            if refusing and (retry is None or seconds > retry):
                worst, retry = rule, seconds
        return Decision(allowed=not any(refused), refused=worst, retry_after_seconds=retry, states=tuple(states))

    def touch(self, unit: str, now: int, hold: int) -> None:
        members = self.sets[0]
        if members.get(unit, now) > now:
            members[unit] = now + hold

    def remove(self, unit: str, everywhere: bool) -> None:
        for rule, members in zip(MODEL_RULES, self.sets, strict=True):
            if everywhere or not rule.policy.is_window:
                members.pop(unit, None)


# Whole seconds half the time, so that hits land exactly on each other's window edges.
_HOLD = st.one_of(st.integers(1, 20).map(lambda seconds: seconds * 1000), st.integers(1, 20_000))
_STEP = st.one_of(st.integers(0, 12).map(lambda seconds: seconds * 1000), st.integers(0, 12_000))
_PICK = st.integers(0, 40)
MODEL_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), _STEP),
        st.tuples(st.just("acquire"), _HOLD),
        st.tuples(st.just("reacquire"), _PICK, _HOLD),
        st.tuples(st.just("touch"), _PICK, _HOLD),
        st.tuples(st.just("release"), _PICK),
        st.tuples(st.just("refund"), _PICK),
    ),
    max_size=40,
)


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "embedded"])
def store_factory(request: pytest.FixtureRequest) -> Callable[[], object]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return lambda: redis.asyncio.Redis.from_url(url)
    return fakeredis.FakeAsyncRedis


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=MODEL_OPS)
def test_limiter_matches_the_model(store_factory: Callable[[], object], ops: list[tuple[Any, ...]]) -> None:
    async def run() -> None:
        client = store_factory()
        clock = StepClock()
        # Examples share one Redis database; a fresh prefix keeps them apart.
        limiter = RateLimiter(client, key_prefix=f"model:{uuid.uuid4().hex}:", clock=clock)
        model, units, now = SlidingModel(), ["u0"], round(T0 * 1000)
        try:
            for op in ops:
                kind = op[0]
                if kind == "advance":
                    now += op[1]
                    clock.now = now / 1000
                elif kind in ("acquire", "reacquire"):
                    unit = f"u{len(units)}" if kind == "acquire" else units[op[1] % len(units)]
                    units.append(unit)
                    hold = op[-1]
                    assert await limiter.acquire(unit, MODEL_RULES, hold_seconds=hold / 1000) == model.acquire(
                        unit, now, hold
                    ), ops
                elif kind == "touch":
                    unit = units[op[1] % len(units)]
                    await limiter.touch(unit, MODEL_RULES, hold_seconds=op[2] / 1000)
                    model.touch(unit, now, op[2])
                else:
                    unit = units[op[1] % len(units)]
                    await (limiter.refund if kind == "refund" else limiter.release)(unit, MODEL_RULES)
                    model.remove(unit, everywhere=kind == "refund")
            assert await limiter.acquire("last", MODEL_RULES, hold_seconds=1) == model.acquire("last", now, 1000)
        finally:
            await client.aclose()  # type: ignore[attr-defined]

    asyncio.run(run())
