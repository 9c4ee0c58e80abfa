"""Rate limits inside the admission call: one round trip, all-or-nothing, and units that live exactly as
long as what they count (held while queued and renewed, re-armed and bound at activation, given back on
every ending).

The parts are driven directly (admission store + client protection on one store, an injected clock), on the
real Redis and on the embedded store; the round-trip counts are read from a private redis-server's
command statistics while real HTTP requests go through a whole gateway.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from gateway.admission.store import AdmissionStore, Caps, Outcome
from gateway.config import load_settings
from gateway.model.entry import QueueEntry
from gateway.model.request import SessionRequest
from gateway.queue.protection import QUEUED_HOLD_SECONDS, ClientProtection, Subject
from ratelimit import Policy, Rule
from tests.harness.fake_clock import FakeClock
from tests.harness.stack import base_config, session_body, start_stack

QUEUE_ONLY = Caps(global_cap=0)
ROOM = Caps(global_cap=10)
ALICE = Subject(client_identifier=None, ip="203.0.113.7")
SESSION_LEASE = 600


def settings_with(**security):
    config = base_config(cap=10)
    config["Security"].update(security)
    config["Concurrency"]["SessionLeaseSeconds"] = SESSION_LEASE
    return load_settings(data=config, environ={}).settings


def entry_data(subject: Subject) -> dict:
    """What the gateway stores for a queued request of ``subject``."""
    request = SessionRequest.from_dict(session_body(clientIdentifier=subject.client_identifier))
    return QueueEntry(request=request, ip=subject.ip).to_data()


class Parts:
    def __init__(self, client, clock, **security):
        self.client = client
        self.clock = clock
        self.store = AdmissionStore(client, clock=clock)
        self.protection = ClientProtection(settings_with(**security), client, clock=clock)

    async def admit(self, request_id, *, caps=QUEUE_ONLY, subject=ALICE, max_queue=10_000):
        return await self.store.admit(request_id=request_id, campaign="CampA",
                                      data=entry_data(subject), caps=caps,
                                      pending_lease_seconds=30, max_queue_length=max_queue,
                                      limits=self.protection.limit_call(request_id, subject))

    async def members(self, policy: Policy, subject: Subject = ALICE) -> dict[str, float]:
        key = self.protection._limiter.key_for(Rule(policy=policy, subject=f"client:{subject.client_key}",
                                                    limit=1, window_seconds=None if policy is Policy.CONCURRENT
                                                    else 3600))
        return {(m.decode() if isinstance(m, bytes) else m): s
                for m, s in await self.client.zrange(key, 0, -1, withscores=True)}


@pytest.fixture
def parts_for(store_client):
    def make(**security):
        return Parts(store_client, FakeClock(), **security)
    return make


async def test_a_limit_refusal_stores_nothing_consumes_nothing_and_claims_nothing(parts_for):
    parts = parts_for(RateLimitConcurrency=1, RateLimitHourly=10)
    assert (await parts.admit("first")).outcome is Outcome.QUEUED
    refused = await parts.admit("second")
    assert refused.outcome is Outcome.LIMITED
    assert refused.claimed == () and refused.position is None
    assert await parts.store.queue_ids() == ["first"]
    assert list(await parts.members(Policy.HOURLY)) == ["first"]
    assert list(await parts.members(Policy.CONCURRENT)) == ["first"]
    refusal, headers = parts.protection.verdict(limited=True, values=refused.limit_values, subject=ALICE)
    assert refusal is not None and refusal.status == 429
    assert refusal.message == "Too many concurrent sessions from your IP."
    assert "concurrent" in headers["RateLimit-Policy"]


async def test_a_full_queue_consumes_no_limit(parts_for):
    parts = parts_for(RateLimitConcurrency=5, RateLimitHourly=5, RateLimitDaily=5)
    result = await parts.admit("nope", max_queue=0)
    assert result.outcome is Outcome.FULL
    for policy in Policy:
        assert await parts.members(policy) == {}


async def test_a_queued_unit_is_renewed_while_its_entry_waits(parts_for):
    parts = parts_for(RateLimitConcurrency=1)
    assert (await parts.admit("waiting")).outcome is Outcome.QUEUED
    parts.clock.advance(QUEUED_HOLD_SECONDS - 100)
    assert await parts.protection.renew_queued_units(parts.store.keys.entries) == 1
    parts.clock.advance(QUEUED_HOLD_SECONDS - 100)  # past the first hold: only the renewal keeps it
    assert (await parts.admit("second")).outcome is Outcome.LIMITED
    expiry = (await parts.members(Policy.CONCURRENT))["waiting"]
    assert expiry == pytest.approx((parts.clock() + 100) * 1000)  # renewed 800 s ago for a whole hold


async def test_without_renewal_a_lost_unit_expires_after_the_queued_hold(parts_for):
    parts = parts_for(RateLimitConcurrency=1)
    assert (await parts.admit("waiting")).outcome is Outcome.QUEUED
    parts.clock.advance(QUEUED_HOLD_SECONDS - 1)
    assert (await parts.admit("too-soon")).outcome is Outcome.LIMITED
    parts.clock.advance(2)
    assert (await parts.admit("later")).outcome is Outcome.QUEUED


async def test_renewal_skips_entries_that_left_and_does_not_revive_their_units(parts_for):
    parts = parts_for(RateLimitConcurrency=3)
    await parts.admit("stays")
    await parts.admit("leaves")
    assert await parts.store.remove("leaves")
    await parts.protection.left("leaves", ALICE)
    assert await parts.protection.renew_queued_units(parts.store.keys.entries) == 1
    assert list(await parts.members(Policy.CONCURRENT)) == ["stays"]


async def test_renewal_covers_more_entries_than_one_scan_step(parts_for):
    parts = parts_for(RateLimitConcurrency=1, PerIpRateLimitConcurrency=1000)
    subjects = [Subject(client_identifier=f"c{i}", ip="203.0.113.7") for i in range(450)]
    for i, subject in enumerate(subjects):
        assert (await parts.admit(f"r{i}", subject=subject)).outcome is Outcome.QUEUED
    # each entry holds two concurrent units (its client's and its IP's)
    assert await parts.protection.renew_queued_units(parts.store.keys.entries) == 2 * len(subjects)


async def test_activation_re_arms_the_unit_for_the_session_lease_and_binds_it(parts_for):
    parts = parts_for(RateLimitConcurrency=2)
    admitted = await parts.admit("direct", caps=ROOM)
    assert admitted.outcome is Outcome.ADMITTED
    await parts.store.activate(lease_id=admitted.lease_id, conversation_session_id="Conv-1", request_id=None,
                               session_lease_seconds=SESSION_LEASE,
                               units=parts.protection.activation_units("direct", ALICE, "Conv-1"))
    expiry = (await parts.members(Policy.CONCURRENT))["direct"]
    assert expiry == pytest.approx((parts.clock() + SESSION_LEASE) * 1000)
    assert await parts.client.exists(parts.protection.binding_prefix + "conv-1") == 1
    assert 0 < await parts.client.ttl(parts.protection.binding_prefix + "conv-1") <= SESSION_LEASE + 60
    # the webhook finds the unit through the binding and gives it back
    await parts.protection.session_ended("CONV-1")
    assert await parts.members(Policy.CONCURRENT) == {}


async def test_an_activation_after_the_end_webhook_gives_the_unit_back(parts_for):
    parts = parts_for(RateLimitConcurrency=2)
    admitted = await parts.admit("direct", caps=ROOM)
    await parts.store.end_session("conv-early")  # the webhook overtook the activation
    await parts.store.activate(lease_id=admitted.lease_id, conversation_session_id="conv-early", request_id=None,
                               session_lease_seconds=SESSION_LEASE,
                               units=parts.protection.activation_units("direct", ALICE, "conv-early"))
    assert await parts.members(Policy.CONCURRENT) == {}
    assert await parts.client.exists(parts.protection.binding_prefix + "conv-early") == 0


async def test_an_activation_does_not_bring_back_a_released_unit(parts_for):
    parts = parts_for(RateLimitConcurrency=2)
    admitted = await parts.admit("direct", caps=ROOM)
    await parts.protection.left("direct", ALICE)
    await parts.store.activate(lease_id=admitted.lease_id, conversation_session_id="conv-2", request_id=None,
                               session_lease_seconds=SESSION_LEASE,
                               units=parts.protection.activation_units("direct", ALICE, "conv-2"))
    assert await parts.members(Policy.CONCURRENT) == {}
    assert await parts.client.exists(parts.protection.binding_prefix + "conv-2") == 0


# -- round trips through the whole gateway ---------------------------------------------------------------


@pytest.fixture
async def private_redis(redis_proc):
    """A server of its own, so the round trips counted below are this test's alone."""
    client = aioredis.Redis.from_url(redis_proc.url)
    yield client, redis_proc.url
    await client.aclose()


ALL_LIMITS = {"RateLimitHourly": 100, "RateLimitDaily": 100, "RateLimitConcurrency": 100,
              "PerIpRateLimitHourly": 100, "PerIpRateLimitDaily": 100, "PerIpRateLimitConcurrency": 100}


async def _commands_during(url, stack, action):
    """The commands clients sent to Redis while ``action`` ran, by name (an EVALSHA by its script's name;
    what scripts run inside is not counted), leaving out the rounds that run on their own timers."""
    scripts = {script.sha: name for name, script in stack.gateway.store._scripts.items()}
    background = {"claim", "reap", "other script"}  # queue claims and presence rounds
    marker = "end-of-action"
    names = []
    watcher = aioredis.Redis.from_url(url)  # its own connections, so the gateway's pool is left as it was
    async with watcher.monitor() as monitor:
        result = await action()
        await watcher.echo(marker)
        while True:
            seen = await monitor.next_command()
            if seen.get("client_type") == "lua":
                continue
            parts = seen["command"].split()
            name = parts[0].lower()
            if name == "echo" and marker in seen["command"]:
                break
            if name in ("hello", "client", "select"):
                continue  # a connection's handshake (the watcher opens one for the marker)
            if name == "evalsha":
                name = scripts.get(parts[1], "other script")
                if name in background:
                    continue
            names.append(name)
    await watcher.aclose()
    return result, names


@pytest.mark.redis
@pytest.mark.parametrize(("cap", "code", "expected"), [
    (0, 202, ["admit"]),               # queued: the decision and every limit in one call
    (5, 200, ["admit", "activate"]),   # admitted: then the activation, which also re-arms and binds the unit
])
async def test_a_protected_request_costs_the_same_round_trips_as_an_unprotected_one(private_redis, cap, code,
                                                                                    expected):
    client, url = private_redis
    for limits in ({}, ALL_LIMITS):
        config = base_config(cap=cap)
        config["Security"].update(limits)
        stack = await start_stack(client, config=config, dispatch_interval=3600)
        try:
            await stack.request_session()  # warm: scripts loaded, connections open
            response, commands = await _commands_during(url, stack, stack.request_session)
            assert response.code == code
            assert commands == expected, f"limits={bool(limits)}"
        finally:
            await stack.close()
        await client.flushall()


async def test_a_renewal_never_shortens_the_hold_a_session_got(store_client):
    clock = FakeClock()
    config = base_config(cap=10)
    config["Security"].update({"RateLimitConcurrency": 2})
    config["Concurrency"]["SessionLeaseSeconds"] = 3600  # longer than the queued hold
    settings = load_settings(data=config, environ={}).settings
    store = AdmissionStore(store_client, clock=clock)
    protection = ClientProtection(settings, store_client, clock=clock)
    await store.admit(request_id="queued", campaign="CampA", data=entry_data(ALICE),
                      caps=QUEUE_ONLY, pending_lease_seconds=30, max_queue_length=10,
                      limits=protection.limit_call("queued", ALICE))
    [claimed] = await store.claim(caps=ROOM, pending_lease_seconds=30, limit=5)
    # activated, but not yet marked ready: the entry is still in the entries the renewal walks
    await store.activate(lease_id=claimed.lease_id, conversation_session_id="conv-long", request_id="queued",
                         session_lease_seconds=3600,
                         units=protection.activation_units("queued", ALICE, "conv-long"))
    assert await protection.renew_queued_units(store.keys.entries) == 1
    key = protection._limiter.key_for(Rule(policy=Policy.CONCURRENT, subject=f"client:{ALICE.client_key}", limit=1))
    assert await store_client.zscore(key, "queued") == pytest.approx((clock() + 3600) * 1000)
