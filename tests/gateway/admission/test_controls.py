"""The operators' controls as the admission scripts apply them (a real Redis and the embedded store): a pause
queues every request and lets no claim take anything, a cap override replaces the caller's cap in both
scripts, and the snapshot reads them back with the queue and the sessions."""

from __future__ import annotations

import pytest

from gateway.admission.control import Controls, ControlStore, Operator
from gateway.admission.keys import KeySpace
from gateway.admission.snapshot import SnapshotReader
from gateway.admission.store import AdmissionStore, Caps, Outcome, new_claim_token
from tests.gateway.admission.test_store import admit

ALICE = Operator(ip="192.0.2.7", name="alice")
CAP_2 = Caps(global_cap=2, campaign_caps={})


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def store(client, clock) -> AdmissionStore:
    return AdmissionStore(client, clock=clock)


@pytest.fixture
def controls(client, store, clock) -> ControlStore:
    return ControlStore(client, keys=store.keys, audit_key=KeySpace().admin_audit, clock=clock)


async def test_a_pause_queues_with_free_slots_and_claims_nothing_until_resumed(store, controls):
    assert await controls.pause(ALICE) == Controls(paused=True)
    first = await admit(store, "a", caps=CAP_2)
    assert (first.outcome, first.position, first.claimed) == (Outcome.QUEUED, 1, ())
    assert await store.claim(caps=CAP_2, pending_lease_seconds=30, limit=10) == []
    assert await controls.resume(ALICE) == Controls()
    # Resumed: a newcomer does not overtake the entry queued during the pause; it claims it first.
    second = await admit(store, "b", caps=CAP_2)
    assert second.outcome is Outcome.ADMITTED and [e.request_id for e in second.claimed] == ["a"]


async def test_a_claim_settled_during_a_pause_still_serves_what_it_took(store, controls):
    await admit(store, "a", caps=Caps(global_cap=0))
    token = new_claim_token()
    [entry] = await store.claim(caps=CAP_2, pending_lease_seconds=30, limit=1, token=token)
    await controls.pause(ALICE)
    settled = await store.settle_claim(token, pending_lease_seconds=30, limit=1)
    assert [e.request_id for e in settled] == [entry.request_id]  # a lease already held is not taken back


async def test_a_cap_override_replaces_the_callers_cap_in_both_scripts(store, controls):
    await controls.set_cap(1, ALICE)
    assert (await admit(store, "a", caps=CAP_2)).outcome is Outcome.ADMITTED
    assert (await admit(store, "b", caps=CAP_2)).outcome is Outcome.QUEUED  # 1, not the caller's 2
    assert await store.claim(caps=CAP_2, pending_lease_seconds=30, limit=10) == []
    await controls.set_cap(3, ALICE)
    assert [e.request_id for e in await store.claim(caps=Caps(global_cap=0), pending_lease_seconds=30, limit=10)] \
        == ["b"]  # 3, not the caller's 0
    assert (await admit(store, "c", caps=Caps(global_cap=0))).outcome is Outcome.ADMITTED
    assert await controls.set_cap(None, ALICE) == Controls()
    assert (await admit(store, "d", caps=CAP_2)).outcome is Outcome.QUEUED  # the caller's 2 again: 3 in use
    with pytest.raises(ValueError):
        await controls.set_cap(-1, ALICE)


async def test_every_change_is_in_the_audit_trail_newest_first(controls, clock):
    await controls.pause(ALICE)
    clock.advance(5)
    await controls.set_cap(4, Operator(ip="192.0.2.8"))
    await controls.record(ALICE, "end session", {"conversationSessionId": "c1"})
    trail = await controls.audit_trail()
    assert [(line["action"], line["operator"], line["ip"]) for line in trail] == [
        ("end session", "alice", "192.0.2.7"), ("capacity", "", "192.0.2.8"), ("pause", "alice", "192.0.2.7")]
    assert trail[1]["cap"] == 4 and trail[1]["time"] == trail[2]["time"] + 5


async def test_the_snapshot_lists_the_front_the_dispatching_and_the_sessions(client, store, controls, clock):
    reader = SnapshotReader(client, keys=store.keys, registered_key="iqra:presence:registered",
                            session_lease_seconds=900, clock=clock)
    admitted = await admit(store, "live", caps=Caps(global_cap=1))
    await store.activate(lease_id=admitted.lease_id, conversation_session_id="Conv-1", request_id="live",
                         session_lease_seconds=900)
    for rid in ("w1", "w2", "w3"):
        await store.admit(request_id=rid, campaign="c2", caps=Caps(global_cap=1), pending_lease_seconds=30,
                          max_queue_length=10, data={"request": {"regionId": "eu"}, "queuedAt": clock() - 7})
    await client.hset("iqra:presence:registered", "w2", "1")
    await controls.set_cap(2, ALICE)
    [dispatching] = await store.claim(caps=Caps(global_cap=1), pending_lease_seconds=30, limit=1)
    clock.advance(60)
    snapshot = await reader.read(limit=1)
    assert (snapshot.queued, snapshot.active, snapshot.pending) == (2, 1, 1)
    assert snapshot.controls == Controls(cap=2)
    assert [(e.request_id, e.position, e.dispatching) for e in snapshot.entries] == [
        (dispatching.request_id, 0, True), ("w2", 1, False)]
    assert snapshot.entries[1].registered and snapshot.entries[1].region == "eu"
    assert snapshot.entries[1].age_seconds == pytest.approx(67)
    [session] = snapshot.sessions
    assert (session.conversation_id, session.campaign, session.age_seconds) == ("conv-1", "c1", pytest.approx(60))
    empty = await reader.read(limit=0)
    assert (empty.entries, empty.sessions, empty.queued) == ((), (), 2)
    for bad in (-1, 501, True, 1.5):
        with pytest.raises(ValueError):
            await reader.read(limit=bad)
