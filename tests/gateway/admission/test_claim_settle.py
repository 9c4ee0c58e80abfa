"""Claims a dispatcher can account for without their replies, and leases it renews between platform calls.

``settle_claim`` recovers what a claim with a known token took (its reply lost in a Redis stall) and fences
the token, in whichever order the two run; ``extend_lease`` renews a held entry's pending lease before
another platform call, or says that the entry is no longer the caller's. Both backends.
"""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from gateway.admission.store import AdmissionStore, Caps, Outcome, Removed, Renewal, new_claim_token

LEASE = 10.0
CAMPAIGN = "CampA"


@pytest.fixture
def store(store_client, clock):
    return AdmissionStore(store_client, clock=clock)


async def queue(store: AdmissionStore, *ids: str, cap: int = 0) -> None:
    for rid in ids:
        result = await store.admit(request_id=rid, campaign=CAMPAIGN, data={"n": rid}, caps=Caps(global_cap=cap),
                                   pending_lease_seconds=LEASE, max_queue_length=100)
        assert result.outcome is Outcome.QUEUED


async def claim(store: AdmissionStore, token: str | None = None, cap: int = 2):
    return await store.claim(caps=Caps(global_cap=cap), pending_lease_seconds=LEASE, limit=32, token=token)


async def expiry(store: AdmissionStore, lease_id: str) -> float | None:
    return await store._redis.zscore(store.keys.pending, lease_id)


async def test_settling_returns_what_the_claim_took_renewed_and_can_be_repeated(store, clock):
    await queue(store, "a", "b", "c")
    token = new_claim_token()
    claimed = await claim(store, token)  # its reply "lost": the caller only knows the token
    assert [e.request_id for e in claimed] == ["a", "b"]
    clock.advance(7)
    settled = await store.settle_claim(token, pending_lease_seconds=LEASE, limit=32)
    assert settled == claimed  # same entries, same leases, same data
    assert await expiry(store, claimed[0].lease_id) == clock.now + LEASE  # covers the platform call from now
    assert await store.settle_claim(token, pending_lease_seconds=LEASE, limit=32) == claimed
    assert await store.queue_ids() == ["c"]
    counts = await store.counts()
    assert (counts["pending"], counts["queued"]) == (2, 1)


async def test_a_claim_that_runs_after_its_token_was_settled_claims_nothing(store):
    await queue(store, "a", "b")
    token = new_claim_token()
    assert await store.settle_claim(token, pending_lease_seconds=LEASE, limit=32) == []
    assert await claim(store, token) == []  # the stalled claim, executed late
    assert await store.queue_ids() == ["a", "b"]
    assert (await store.counts())["pending"] == 0
    assert [e.request_id for e in await claim(store)] == ["a", "b"]  # a fresh token claims as usual


async def test_settling_releases_the_slot_of_an_entry_whose_client_left(store):
    await queue(store, "a", "b")
    token = new_claim_token()
    await claim(store, token)
    assert await store.remove("a") is Removed.DISPATCHING
    settled = await store.settle_claim(token, pending_lease_seconds=LEASE, limit=32)
    assert [e.request_id for e in settled] == ["b"]
    assert (await store.counts())["pending"] == 1


async def test_a_renewed_lease_covers_the_next_call_and_keeps_its_grace(store, clock):
    await queue(store, "a")
    [entry] = await claim(store)
    clock.advance(LEASE + 1)
    await store.reap()  # expired: the grace keeps the entry held for one more lease
    assert await store.extend_lease(entry, pending_lease_seconds=LEASE) is Renewal.RENEWED
    assert await expiry(store, entry.lease_id) == clock.now + LEASE
    clock.advance(LEASE + 1)
    await store.reap()  # the renewal gave the grace back: still held
    assert await store.queue_ids() == []
    assert await store.extend_lease(entry, pending_lease_seconds=LEASE) is Renewal.RENEWED


async def test_renewing_after_the_client_left_releases_the_slot(store):
    await queue(store, "a")
    [entry] = await claim(store)
    assert await store.remove("a") is Removed.DISPATCHING
    assert await store.extend_lease(entry, pending_lease_seconds=LEASE) is Renewal.LEFT
    assert (await store.counts())["pending"] == 0


async def test_renewing_a_lease_reaped_meanwhile_says_it_is_lost(store, clock):
    await queue(store, "a")
    [entry] = await claim(store)
    for _ in range(2):  # expiry, grace, expiry: the entry goes back to the queue
        clock.advance(LEASE + 1)
        await store.reap()
    assert await store.queue_ids() == ["a"]
    assert await store.extend_lease(entry, pending_lease_seconds=LEASE) is Renewal.LOST
    assert await store.queue_ids() == ["a"]


async def test_an_entry_with_unreadable_data_is_claimed_alone_with_empty_data(store):
    await queue(store, "a", "b")
    await store._redis.hset(store.keys.entries, "a", "{not json")
    claimed = await claim(store)
    assert [(e.request_id, e.data) for e in claimed] == [("a", {}), ("b", {"n": "b"})]


async def test_an_admission_is_settled_like_a_claim_its_own_lease_given_back(store):
    # An admission whose reply was lost: what it claimed is served, the slot it took for its own request
    # (whose client was told it failed) is given back, and run again after the settling it does nothing.
    await queue(store, "a")
    token = new_claim_token()
    result = await store.admit(request_id="new", campaign=CAMPAIGN, data={"n": "new"}, caps=Caps(global_cap=2),
                               pending_lease_seconds=LEASE, max_queue_length=100, token=token)
    assert result.outcome is Outcome.ADMITTED and result.lease_id == f"{token}:0"
    assert [e.request_id for e in result.claimed] == ["a"]
    settled = await store.settle_claim(token, pending_lease_seconds=LEASE, limit=store.scan_limit)
    assert [e.request_id for e in settled] == ["a"]
    counts = await store.counts()
    assert counts["pending"] == 1  # "a"'s lease only; the admitted request's own lease was given back

    fenced = new_claim_token()
    assert await store.settle_claim(fenced, pending_lease_seconds=LEASE, limit=store.scan_limit) == []
    with pytest.raises(ResponseError, match="FENCED"):
        await store.admit(request_id="late", campaign=CAMPAIGN, data={}, caps=Caps(global_cap=5),
                          pending_lease_seconds=LEASE, max_queue_length=100, token=fenced)
    assert await store.status("late") is None
