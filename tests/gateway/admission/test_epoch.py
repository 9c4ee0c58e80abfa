"""The store epoch: learned once, a reset (flush or empty restart) reported exactly once per process."""

from __future__ import annotations

import pytest

from gateway.admission.epoch import EpochWatcher, StoreEpoch
from gateway.admission.keys import AdmissionKeys, KeySpace
from gateway.admission.store import AdmissionStore, Caps, StoreReset
from gateway.queue.capacity import CapacityPolicy, PlatformUsage
from ratelimit.plan import LimitPlan


@pytest.mark.redis
async def test_first_check_learns_and_a_flush_is_reported_once_by_every_process(redis_client) -> None:
    calls: list[str] = []

    async def handler_a() -> None:
        calls.append("a")

    async def handler_b() -> None:
        calls.append("b")

    a = EpochWatcher(StoreEpoch(redis_client, key="t:epoch"), handlers=[handler_a])
    b = EpochWatcher(StoreEpoch(redis_client, key="t:epoch"), handlers=[handler_b])
    assert await a.check_once() is False
    assert await b.check_once() is False
    assert a.epoch.known == b.epoch.known is not None
    assert await a.check_once() is False

    await redis_client.flushall()
    assert await b.check_once() is True  # b notices first and writes the new epoch
    assert await a.check_once() is True  # a finds a token it does not know
    assert a.epoch.known == b.epoch.known
    assert await a.check_once() is False and await b.check_once() is False
    assert calls == ["b", "a"]


@pytest.mark.redis
async def test_a_failing_handler_does_not_stop_the_others(redis_client) -> None:
    ran: list[str] = []

    async def broken() -> None:
        raise RuntimeError("bug")

    async def fine() -> None:
        ran.append("fine")

    watcher = EpochWatcher(StoreEpoch(redis_client, key="t:epoch"), handlers=[broken, fine])
    await watcher.check_once()
    await redis_client.delete("t:epoch")
    assert await watcher.check_once() is True
    assert ran == ["fine"]


@pytest.mark.redis
@pytest.mark.parametrize("limits", [False, True], ids=["no-limits", "with-limits"])
async def test_admission_and_claims_under_an_unknown_epoch_are_refused_and_change_nothing(
        redis_client, limits: bool) -> None:

    epoch = StoreEpoch(redis_client, key=AdmissionKeys().epoch)
    store = AdmissionStore(redis_client, epoch=lambda: epoch.known)
    caps = Caps(global_cap=5, campaign_caps={})
    call = None
    if limits:
        plan = LimitPlan(key_prefix=KeySpace().rate_limits, hourly=5, daily=0, concurrency=1, per_ip_hourly=0, per_ip_daily=0,
                         per_ip_concurrency=0)
        call = plan.acquire_call("r1", client_key="id:a", ip="10.0.0.1", now_ms=1_000, hold_ms=60_000)
    # No epoch known yet (the store was down at start-up): nothing to compare, the call goes through.
    assert (await store.admit(request_id="r0", campaign="c", data={}, caps=caps, pending_lease_seconds=30,
                              max_queue_length=10)).lease_id
    assert await epoch.check() is False  # learns it
    await redis_client.delete(AdmissionKeys().epoch)  # what a reset looks like to the scripts
    before = sorted(await redis_client.keys("*"))
    with pytest.raises(StoreReset):
        await store.admit(request_id="r1", campaign="c", data={}, caps=caps, pending_lease_seconds=30,
                          max_queue_length=10, limits=call)
    with pytest.raises(StoreReset):
        await store.claim(caps=caps, pending_lease_seconds=30, limit=5, token="t1")
    assert sorted(await redis_client.keys("*")) == before
    # Caught up: the new epoch is adopted and calls go through again.
    assert await epoch.check() is True
    assert (await store.admit(request_id="r1", campaign="c", data={}, caps=caps, pending_lease_seconds=30,
                              max_queue_length=10, limits=call)).lease_id


def test_after_a_reset_a_platform_cap_admits_nothing_until_the_next_reading() -> None:
    learned = CapacityPolicy(global_cap=None, campaign_caps={})
    learned.learn(PlatformUsage(current=0, limit=2), ours=0)
    assert learned.caps().global_cap == 2
    learned.assume_reset()
    assert learned.caps().global_cap == 0
    learned.learn(PlatformUsage(current=2, limit=2), ours=0)  # our two forgotten sessions still run
    assert learned.caps().global_cap == 0
    fixed = CapacityPolicy(global_cap=3, campaign_caps={})
    fixed.assume_reset()
    assert fixed.caps().global_cap == 3
