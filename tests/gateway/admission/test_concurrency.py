"""Atomicity of the admission store under parallel callers, on a real Redis and the embedded store.

Several :class:`AdmissionStore` instances on separate clients play several gateway processes.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from gateway.admission.store import AdmissionStore, Caps, Outcome

TIMEOUT = 30.0


@pytest.fixture
def stores(make_client, clock) -> list[AdmissionStore]:
    """Four "processes" sharing one store."""
    return [AdmissionStore(make_client(), clock=clock) for _ in range(4)]


async def gather(*aws):
    return await asyncio.wait_for(asyncio.gather(*aws), TIMEOUT)


async def test_200_parallel_admits_admit_exactly_k_and_queue_the_rest_gap_free(stores):
    k, n = 7, 200
    caps = Caps(global_cap=k, campaign_caps={})
    results = await gather(*(
        store.admit(request_id=f"r{i}", campaign="c", data={"i": i}, caps=caps,
                    pending_lease_seconds=30, max_queue_length=1000)
        for i, store in zip(range(n), itertools.cycle(stores))
    ))
    admitted = [r for r in results if r.outcome is Outcome.ADMITTED]
    queued = [r for r in results if r.outcome is Outcome.QUEUED]
    assert len(admitted) == k and len(queued) == n - k
    assert len({r.lease_id for r in admitted}) == k
    assert sorted(r.position for r in queued) == list(range(1, n - k + 1))
    assert all(r.claimed == () for r in results)
    # the position each caller was told is where its entry really is
    ids = await stores[0].queue_ids()
    by_position = {r.position: f"r{i}" for i, r in enumerate(results) if r.outcome is Outcome.QUEUED}
    assert ids == [by_position[p] for p in range(1, n - k + 1)]
    assert await stores[1].counts() == {"active": 0, "pending": k, "queued": n - k, "campaigns": {"c": k}}


async def test_parallel_admits_respect_campaign_cap_and_queue_length(stores):
    caps = Caps(global_cap=20, campaign_caps={"a": 5})
    results = await gather(*(
        store.admit(request_id=f"r{i}", campaign="a" if i % 2 else "b", data={}, caps=caps,
                    pending_lease_seconds=30, max_queue_length=150)
        for i, store in zip(range(200), itertools.cycle(stores))
    ))
    admitted = [i for i, r in enumerate(results) if r.outcome is Outcome.ADMITTED]
    queued = [r.position for r in results if r.outcome is Outcome.QUEUED]
    full = [r for r in results if r.outcome is Outcome.FULL]
    assert len(admitted) == 20
    assert sum(1 for i in admitted if i % 2) <= 5
    assert sorted(queued) == list(range(1, 151))
    assert len(full) == 30
    counts = await stores[0].counts()
    assert counts["pending"] == 20 and counts["queued"] == 150
    assert counts["campaigns"]["a"] <= 5


async def test_parallel_claims_by_several_processes_never_claim_twice(stores):
    n = 60
    for i in range(n):
        await stores[0].admit(request_id=f"r{i}", campaign=f"c{i % 3}", data={"i": i},
                              caps=Caps(global_cap=0, campaign_caps={}), pending_lease_seconds=30,
                              max_queue_length=1000)
    caps = Caps(global_cap=50, campaign_caps={"c0": 10})
    batches = await gather(*(
        store.claim(caps=caps, pending_lease_seconds=30, limit=3)
        for store in itertools.islice(itertools.cycle(stores), 40)
    ))
    claimed = [entry for batch in batches for entry in batch]
    ids = [e.request_id for e in claimed]
    assert len(ids) == len(set(ids)) == 50
    assert len({e.lease_id for e in claimed}) == 50
    assert sum(1 for e in claimed if e.campaign == "c0") == 10
    remaining = await stores[0].queue_ids()
    assert set(remaining) | set(ids) == {f"r{i}" for i in range(n)}
    assert all(int(r[1:]) % 3 == 0 for r in remaining)  # only the capped campaign still waits


async def test_dead_claimers_entries_are_retried_after_pending_lease_expires(stores, clock):
    alive, dying = stores[0], stores[1]
    for i in range(5):
        await alive.admit(request_id=f"r{i}", campaign="c", data={"i": i}, caps=Caps(global_cap=0, campaign_caps={}),
                          pending_lease_seconds=10, max_queue_length=100)
    caps = Caps(global_cap=2, campaign_caps={})
    lost = await dying.claim(caps=caps, pending_lease_seconds=10, limit=2)
    assert [e.request_id for e in lost] == ["r0", "r1"]
    assert await alive.claim(caps=caps, pending_lease_seconds=10, limit=2) == []  # slots still held

    clock.advance(10)  # the dying process never activated: its pending leases run out, and are given one
    # more lease duration (a live claimer may only have been unable to reach the store)
    assert await alive.claim(caps=caps, pending_lease_seconds=10, limit=2) == []
    clock.advance(10)
    retried = await alive.claim(caps=caps, pending_lease_seconds=10, limit=2)
    assert [e.request_id for e in retried] == ["r0", "r1"]
    assert [e.data for e in retried] == [{"i": 0}, {"i": 1}]
    assert {e.lease_id for e in retried}.isdisjoint({e.lease_id for e in lost})
    # the dead process's late calls change nothing
    assert await dying.release_lease(lost[0].lease_id) is False
    assert await dying.requeue_front(lost[1]) == 0
    assert await alive.counts() == {"active": 0, "pending": 2, "queued": 3, "campaigns": {"c": 2}}


async def test_parallel_end_session_releases_once(stores):
    caps = Caps(global_cap=1, campaign_caps={})
    lease = (await stores[0].admit(request_id="r", campaign="c", data={}, caps=caps, pending_lease_seconds=9,
                                   max_queue_length=9)).lease_id
    await stores[0].activate(lease_id=lease, conversation_session_id="S", request_id=None, session_lease_seconds=99)
    results = await gather(*(store.end_session("s") for store in stores * 5))
    assert sorted(results).count("released") == 1
    assert results.count("already_ended") == len(results) - 1
    assert await stores[0].counts() == {"active": 0, "pending": 0, "queued": 0, "campaigns": {}}
