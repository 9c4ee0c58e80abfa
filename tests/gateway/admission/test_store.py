"""Behaviour of :class:`gateway.admission.store.AdmissionStore` on a real Redis and on the embedded store.

Time is driven by an injected clock, so lease expiry is tested without sleeping.
"""

from __future__ import annotations

import pytest

from gateway.admission.store import (
    AdmissionStore,
    AdmitResult,
    Caps,
    ClaimedEntry,
    DuplicateRequestError,
    EndResult,
    Outcome,
    Removed,
    RequestStatus,
)

DAY = 86400.0


@pytest.fixture
def store(make_client, clock) -> AdmissionStore:
    return AdmissionStore(make_client(), clock=clock)


async def admit(store: AdmissionStore, request_id: str, campaign: str = "c1", *, caps: Caps,
                max_queue: int = 100, pending: float = 30.0) -> AdmitResult:
    return await store.admit(request_id=request_id, campaign=campaign, data={"id": request_id}, caps=caps,
                             pending_lease_seconds=pending, max_queue_length=max_queue)


async def test_admits_up_to_global_cap_then_queues_with_exact_positions(store):
    caps = Caps(global_cap=2, campaign_caps={})
    results = [await admit(store, f"r{i}", caps=caps) for i in range(5)]
    assert [r.outcome for r in results] == [Outcome.ADMITTED] * 2 + [Outcome.QUEUED] * 3
    assert results[0].lease_id and results[1].lease_id and results[0].lease_id != results[1].lease_id
    assert [r.position for r in results[2:]] == [1, 2, 3]
    assert await store.queue_ids() == ["r2", "r3", "r4"]
    assert await store.counts() == {"active": 0, "pending": 2, "queued": 3, "campaigns": {"c1": 2}}


async def test_full_queue_refuses_and_stores_nothing(store):
    caps = Caps(global_cap=0, campaign_caps={})
    assert (await admit(store, "a", caps=caps, max_queue=2)).position == 1
    assert (await admit(store, "b", caps=caps, max_queue=2)).position == 2
    full = await admit(store, "c", caps=caps, max_queue=2)
    assert full == AdmitResult(outcome=Outcome.FULL)
    assert await store.status("c") is None
    assert await store.queue_ids() == ["a", "b"]


async def test_campaign_cap_queues_only_that_campaign(store):
    caps = Caps(global_cap=10, campaign_caps={"small": 1})
    assert (await admit(store, "s1", "small", caps=caps)).outcome is Outcome.ADMITTED
    assert (await admit(store, "s2", "small", caps=caps)).position == 1
    assert (await admit(store, "b1", "big", caps=caps)).outcome is Outcome.ADMITTED
    assert (await store.counts())["campaigns"] == {"small": 1, "big": 1}


async def test_fifo_across_campaigns_without_head_of_line_blocking(store):
    caps = Caps(global_cap=3, campaign_caps={"a": 1})
    a1 = await admit(store, "a1", "a", caps=caps)
    assert (await admit(store, "a2", "a", caps=caps)).position == 1
    # a2 waits for campaign a, but it must not hold back campaign b while the global cap has room
    b1 = await admit(store, "b1", "b", caps=caps)
    assert b1.outcome is Outcome.ADMITTED
    assert (await admit(store, "c1", "c", caps=caps)).outcome is Outcome.ADMITTED
    for rid, campaign in (("b2", "b"), ("a3", "a"), ("c2", "c")):
        assert (await admit(store, rid, campaign, caps=caps)).outcome is Outcome.QUEUED
    assert await store.queue_ids() == ["a2", "b2", "a3", "c2"]

    assert await store.release_lease(b1.lease_id)
    # one global slot: a2 is older but campaign a is full, so b2 (oldest eligible) gets it
    claimed = await store.claim(caps=caps, pending_lease_seconds=30, limit=10)
    assert [e.request_id for e in claimed] == ["b2"]
    assert await store.queue_ids() == ["a2", "a3", "c2"]

    assert await store.release_lease(a1.lease_id)
    claimed = await store.claim(caps=caps, pending_lease_seconds=30, limit=10)
    assert [e.request_id for e in claimed] == ["a2"]
    assert [(await store.status(r)).position for r in ("a3", "c2")] == [1, 2]


async def test_new_request_never_overtakes_an_eligible_older_entry(store):
    caps = Caps(global_cap=1, campaign_caps={})
    first = await admit(store, "first", caps=caps)
    assert (await admit(store, "older", caps=caps)).position == 1
    assert await store.release_lease(first.lease_id)  # a slot frees; nobody has called claim yet

    result = await admit(store, "newer", caps=caps)
    assert result.outcome is Outcome.QUEUED and result.position == 1
    assert len(result.claimed) == 1
    entry = result.claimed[0]
    assert (entry.request_id, entry.campaign, entry.data) == ("older", "c1", {"id": "older"})
    assert entry.lease_id and await store.status("older") == RequestStatus(status="dispatching")


async def test_entry_data_round_trips_unchanged(store):
    data = {"payload": {"dynamicVariables": {}, "metadata": {"k": "ü"}}, "ip": "10.0.0.1", "n": [1, 2.5, None]}
    await store.admit(request_id="r", campaign="c", data=data, caps=Caps(global_cap=0, campaign_caps={}),
                      pending_lease_seconds=5, max_queue_length=5)
    [entry] = await store.claim(caps=Caps(global_cap=1, campaign_caps={}), pending_lease_seconds=5, limit=1)
    assert entry.data == data


async def test_pending_lease_expires_and_is_reaped(store, clock):
    caps = Caps(global_cap=1, campaign_caps={})
    await admit(store, "r1", caps=caps, pending=10)
    clock.advance(9.9)
    assert await store.reap() == 0
    assert (await admit(store, "r2", caps=caps)).outcome is Outcome.QUEUED
    clock.advance(0.2)
    # admit reaps first: r1's slot is free again, so the queued r2 is claimed before r3 is decided
    r3 = await admit(store, "r3", caps=caps)
    assert [e.request_id for e in r3.claimed] == ["r2"]
    assert r3.outcome is Outcome.QUEUED
    assert (await store.counts())["pending"] == 1


async def test_dead_dispatchers_entry_goes_back_to_front_in_order(store, clock):
    caps = Caps(global_cap=0, campaign_caps={})
    for rid in ("r1", "r2", "r3", "r4"):
        await admit(store, rid, caps=caps)
    claimed = await store.claim(caps=Caps(global_cap=3, campaign_caps={}), pending_lease_seconds=10, limit=3)
    assert [e.request_id for e in claimed] == ["r1", "r2", "r3"]
    await admit(store, "r5", caps=caps)
    clock.advance(10)
    assert await store.reap() == 0  # expired, but held for one more lease duration (the grace)
    assert await store.queue_ids() == ["r4", "r5"]
    clock.advance(10)
    assert await store.reap() == 3
    assert await store.queue_ids() == ["r1", "r2", "r3", "r4", "r5"]
    assert await store.counts() == {"active": 0, "pending": 0, "queued": 5, "campaigns": {}}


async def test_activate_then_session_lease_expiry_reclaims_slot(store, clock):
    caps = Caps(global_cap=1, campaign_caps={})
    lease = (await admit(store, "r1", caps=caps)).lease_id
    await store.activate(lease_id=lease, conversation_session_id="CONV1", request_id=None, session_lease_seconds=60)
    assert await store.counts() == {"active": 1, "pending": 0, "queued": 0, "campaigns": {"c1": 1}}
    clock.advance(59)
    assert (await admit(store, "r2", caps=caps)).outcome is Outcome.QUEUED
    clock.advance(1)
    assert await store.reap() == 1
    assert [e.request_id for e in await store.claim(caps=caps, pending_lease_seconds=5, limit=5)] == ["r2"]
    # the webhook arriving after the reap frees nothing more
    assert await store.end_session("conv1") is EndResult.ALREADY_ENDED
    assert (await store.counts())["pending"] == 1


async def test_activate_after_reap_records_session_and_dequeues_entry(store, clock):
    await admit(store, "r1", caps=Caps(global_cap=0, campaign_caps={}))
    caps = Caps(global_cap=1, campaign_caps={})
    [entry] = await store.claim(caps=caps, pending_lease_seconds=10, limit=1)
    clock.advance(11)
    assert await store.reap() == 0  # the grace
    clock.advance(11)
    assert await store.reap() == 1
    assert await store.status("r1") == RequestStatus(status="queued", position=1)

    await store.activate(lease_id=entry.lease_id, conversation_session_id="c-1", request_id="r1",
                         session_lease_seconds=600)
    assert await store.queue_ids() == []
    assert await store.status("r1") == RequestStatus(status="dispatching")
    assert await store.counts() == {"active": 1, "pending": 0, "queued": 0, "campaigns": {"c1": 1}}
    # the reaper no longer requeues it, and the webhook frees the slot once
    clock.advance(11)
    assert await store.reap() == 0
    assert await store.end_session("C-1") is EndResult.RELEASED
    assert await store.counts() == {"active": 0, "pending": 0, "queued": 0, "campaigns": {}}


async def test_activate_twice_holds_one_slot(store):
    caps = Caps(global_cap=5, campaign_caps={})
    lease = (await admit(store, "r1", caps=caps)).lease_id
    for _ in range(2):
        await store.activate(lease_id=lease, conversation_session_id="x", request_id=None, session_lease_seconds=60)
    assert await store.counts() == {"active": 1, "pending": 0, "queued": 0, "campaigns": {"c1": 1}}


async def test_release_lease_frees_once(store):
    caps = Caps(global_cap=1, campaign_caps={"c1": 1})
    lease = (await admit(store, "r1", caps=caps)).lease_id
    assert await store.release_lease(lease) is True
    assert await store.release_lease(lease) is False
    assert await store.release_lease("never-issued") is False
    assert await store.counts() == {"active": 0, "pending": 0, "queued": 0, "campaigns": {}}
    assert (await admit(store, "r2", caps=caps)).outcome is Outcome.ADMITTED


async def test_end_session_is_idempotent_case_insensitive_and_remembered_a_day(store, clock):
    caps = Caps(global_cap=1, campaign_caps={})
    lease = (await admit(store, "r1", caps=caps)).lease_id
    await store.activate(lease_id=lease, conversation_session_id="65F0AbC", request_id=None,
                         session_lease_seconds=3 * DAY)
    assert await store.end_session("65f0abc") is EndResult.RELEASED
    assert await store.end_session("65F0ABC") is EndResult.ALREADY_ENDED
    assert await store.end_session("65f0abc") is EndResult.ALREADY_ENDED
    assert await store.end_session("never-seen") is EndResult.UNKNOWN
    assert await store.end_session("never-seen") is EndResult.UNKNOWN
    assert await store.counts() == {"active": 0, "pending": 0, "queued": 0, "campaigns": {}}
    clock.advance(DAY - 1)
    assert await store.end_session("65f0abc") is EndResult.ALREADY_ENDED
    clock.advance(2)
    assert await store.end_session("65f0abc") is EndResult.UNKNOWN


async def test_end_webhook_before_activate_holds_no_slot(store):
    caps = Caps(global_cap=1, campaign_caps={})
    lease = (await admit(store, "r1", caps=caps)).lease_id
    assert await store.end_session("early") is EndResult.UNKNOWN
    await store.activate(lease_id=lease, conversation_session_id="early", request_id=None, session_lease_seconds=60)
    assert await store.counts() == {"active": 0, "pending": 0, "queued": 0, "campaigns": {}}
    assert await store.end_session("early") is EndResult.ALREADY_ENDED


async def test_requeue_front_releases_lease_and_returns_position(store):
    for rid in ("r1", "r2", "r3"):
        await admit(store, rid, caps=Caps(global_cap=0, campaign_caps={}))
    caps = Caps(global_cap=1, campaign_caps={})
    [entry] = await store.claim(caps=caps, pending_lease_seconds=30, limit=5)
    assert entry.request_id == "r1" and await store.queue_ids() == ["r2", "r3"]
    assert await store.requeue_front(entry) == 1
    assert await store.queue_ids() == ["r1", "r2", "r3"]
    assert await store.counts() == {"active": 0, "pending": 0, "queued": 3, "campaigns": {}}
    [again] = await store.claim(caps=caps, pending_lease_seconds=30, limit=5)
    assert again.request_id == "r1" and again.lease_id != entry.lease_id
    # an entry that left meanwhile is not brought back (-1: nobody else settles it), but its lease is
    # still released
    assert await store.remove("r1")
    assert await store.requeue_front(again) == -1
    assert await store.queue_ids() == ["r2", "r3"]
    assert (await store.counts())["pending"] == 0


async def test_a_live_dispatcher_records_its_session_within_the_grace_and_the_entry_is_served_once(store, clock):
    # The dispatcher got a platform session but could not reach the store until after its pending lease
    # ran out: the first reap that finds it gives one more lease duration instead of requeueing the entry,
    # so the late activation still finds its lease pending and nobody dispatches the entry again.
    await admit(store, "r1", caps=Caps(global_cap=0, campaign_caps={}))
    caps = Caps(global_cap=2, campaign_caps={})
    [entry] = await store.claim(caps=caps, pending_lease_seconds=10, limit=1)
    clock.advance(300)  # a long outage
    assert await store.claim(caps=caps, pending_lease_seconds=10, limit=5) == []  # not dispatched again
    assert await store.counts() == {"active": 0, "pending": 1, "queued": 0, "campaigns": {"c1": 1}}
    clock.advance(9)
    await store.activate(lease_id=entry.lease_id, conversation_session_id="conv-late", request_id="r1",
                         session_lease_seconds=600)
    assert await store.counts() == {"active": 1, "pending": 0, "queued": 0, "campaigns": {"c1": 1}}
    clock.advance(60)
    assert await store.claim(caps=caps, pending_lease_seconds=10, limit=5) == []
    assert await store.status("r1") == RequestStatus(status="dispatching")


async def test_requeue_front_of_an_entry_already_settled_elsewhere_is_0(store):
    await admit(store, "r1", caps=Caps(global_cap=0, campaign_caps={}))
    [entry] = await store.claim(caps=Caps(global_cap=1, campaign_caps={}), pending_lease_seconds=30, limit=5)
    await store.set_outcome("r1", status="ready", web_socket_url="ws://x", ttl_seconds=60)
    assert await store.requeue_front(entry) == 0
    assert await store.queue_ids() == []


async def test_requeue_front_leaves_an_entry_another_dispatcher_holds(store, clock):
    await admit(store, "r1", caps=Caps(global_cap=0, campaign_caps={}))
    caps = Caps(global_cap=1, campaign_caps={})
    [stale] = await store.claim(caps=caps, pending_lease_seconds=10, limit=1)
    clock.advance(10)
    assert await store.claim(caps=caps, pending_lease_seconds=10, limit=1) == []  # the grace
    clock.advance(10)
    [fresh] = await store.claim(caps=caps, pending_lease_seconds=10, limit=1)  # reaped, re-claimed
    assert fresh.request_id == "r1" and fresh.lease_id != stale.lease_id
    assert await store.requeue_front(stale) == 0
    assert await store.status("r1") == RequestStatus(status="dispatching")
    assert (await store.counts())["pending"] == 1


async def test_status_transitions(store, clock):
    assert await store.status("r1") is None
    await admit(store, "r0", caps=Caps(global_cap=0, campaign_caps={}))
    await admit(store, "r1", caps=Caps(global_cap=0, campaign_caps={}))
    assert await store.status("r1") == RequestStatus(status="queued", position=2)
    claimed = await store.claim(caps=Caps(global_cap=2, campaign_caps={}), pending_lease_seconds=30, limit=5)
    assert await store.status("r1") == RequestStatus(status="dispatching")

    await store.set_outcome("r1", status="ready", web_socket_url="wss://x/ws?t=1", ttl_seconds=60)
    await store.set_outcome("r0", status="failed", message="platform error", ttl_seconds=60)
    assert await store.status("r1") == RequestStatus(status="ready", web_socket_url="wss://x/ws?t=1")
    assert await store.status("r0") == RequestStatus(status="failed", message="platform error")
    assert len(claimed) == 2 and await store.queue_ids() == []
    clock.advance(60)
    assert await store.status("r1") == RequestStatus(status="expired")
    with pytest.raises(DuplicateRequestError):
        await admit(store, "r1", caps=Caps(global_cap=5, campaign_caps={}))


async def test_removed_entry_reads_failed_with_the_reason(store):
    await admit(store, "r1", caps=Caps(global_cap=0, campaign_caps={}))
    await admit(store, "r2", caps=Caps(global_cap=0, campaign_caps={}))
    assert await store.remove("r1", message="You left.") is Removed.WAITING
    assert await store.remove("r1") is Removed.NOTHING
    assert await store.remove("unknown") is Removed.NOTHING
    assert await store.status("r1") == RequestStatus(status="failed", message="You left.")
    assert await store.status("r2") == RequestStatus(status="queued", position=1)


async def test_removed_dispatching_entry_is_not_requeued_by_reaper(store, clock):
    await admit(store, "r1", caps=Caps(global_cap=0, campaign_caps={}))
    await store.claim(caps=Caps(global_cap=1, campaign_caps={}), pending_lease_seconds=10, limit=1)
    assert await store.remove("r1")
    clock.advance(10)
    assert await store.reap() == 1
    assert await store.queue_ids() == []
    assert (await store.status("r1")).message == "left the queue"


async def test_duplicate_request_id_is_refused(store):
    caps = Caps(global_cap=0, campaign_caps={})
    await admit(store, "dup", caps=caps)
    with pytest.raises(DuplicateRequestError):
        await admit(store, "dup", caps=caps)
    assert await store.queue_ids() == ["dup"]


async def test_bad_input_raises_value_error(store):
    caps = Caps(global_cap=1, campaign_caps={})
    with pytest.raises(ValueError, match="JSON"):
        await store.admit(request_id="r", campaign="c", data={"x": object()}, caps=caps,
                          pending_lease_seconds=5, max_queue_length=5)
    with pytest.raises(ValueError, match="request_id"):
        await admit(store, "", caps=caps)
    with pytest.raises(ValueError, match="pending_lease_seconds"):
        await admit(store, "r", caps=caps, pending=0)
    with pytest.raises(ValueError, match="status"):
        await store.set_outcome("r", status="queued", ttl_seconds=5)
    with pytest.raises(ValueError, match="conversation_session_id"):
        await store.end_session(" ")
    with pytest.raises(ValueError, match="longer than"):
        await store.status("x" * 257)
    with pytest.raises(ValueError, match="global_cap"):
        Caps(global_cap=-1, campaign_caps={})
    with pytest.raises(ValueError, match="campaign cap"):
        Caps(global_cap=1, campaign_caps={"c": "3"})
    assert await store.status("r") is None


async def test_key_prefix_scopes_every_key(make_client, clock):
    client = make_client()
    store = AdmissionStore(client, key_prefix="other:", clock=clock)
    caps = Caps(global_cap=1, campaign_caps={})
    lease = (await admit(store, "r1", caps=caps)).lease_id
    await admit(store, "r2", caps=caps)
    await store.activate(lease_id=lease, conversation_session_id="s", request_id=None, session_lease_seconds=9)
    await store.end_session("s")
    keys = [k.decode() for k in await client.keys("*")]
    assert keys and all(k.startswith("other:") for k in keys)
    # a store under the default prefix sees none of it
    assert await AdmissionStore(client, clock=clock).counts() == {"active": 0, "pending": 0, "queued": 0,
                                                                   "campaigns": {}}


async def test_ping(store):
    await store.ping()


def test_claimed_entry_is_a_frozen_value():
    entry = ClaimedEntry(request_id="r", campaign="c", lease_id="l", data={})
    with pytest.raises(AttributeError):
        entry.lease_id = "other"  # type: ignore[misc]


async def test_scan_limit_bounds_the_eligibility_scan_and_stays_fair(make_client, clock):
    store = AdmissionStore(make_client(), clock=clock, scan_limit=2)
    caps = Caps(global_cap=5, campaign_caps={"a": 1})
    assert (await admit(store, "a0", "a", caps=caps)).outcome is Outcome.ADMITTED
    for rid in ("a1", "a2"):
        assert (await admit(store, rid, "a", caps=caps)).outcome is Outcome.QUEUED
    # two ineligible entries fill the scan budget, so the store cannot prove that no older eligible
    # entry is waiting: the new request is queued rather than risk overtaking one
    assert (await admit(store, "b1", "b", caps=caps)).position == 3
    # a scan that starts from the front still finds b1 once it is within the bound
    assert await store.remove("a1")
    claimed = await store.claim(caps=caps, pending_lease_seconds=5, limit=5)
    assert [e.request_id for e in claimed] == ["b1"]
    assert (await admit(store, "b2", "b", caps=caps)).outcome is Outcome.ADMITTED


async def test_requeue_front_of_a_direct_admission_creates_the_entry(store):
    caps = Caps(global_cap=1, campaign_caps={})
    admitted = await admit(store, "direct", caps=caps)
    await store.admit(request_id="waiting", campaign="c1", data={}, caps=caps, pending_lease_seconds=5,
                      max_queue_length=5)
    entry = ClaimedEntry(request_id="direct", campaign="c1", lease_id=admitted.lease_id, data={"id": "direct"})
    assert await store.requeue_front(entry) == 1
    assert await store.queue_ids() == ["direct", "waiting"]
    assert await store.status("direct") == RequestStatus(status="queued", position=1)
    [claimed] = await store.claim(caps=caps, pending_lease_seconds=5, limit=5)
    assert (claimed.request_id, claimed.campaign, claimed.data) == ("direct", "c1", {"id": "direct"})
    # a request that already has an outcome is not brought back
    await store.set_outcome("direct", status="failed", message="x", ttl_seconds=5)
    assert await store.requeue_front(claimed) == 0
    assert await store.queue_ids() == ["waiting"]
