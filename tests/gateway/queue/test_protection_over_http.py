"""Client protection through the real HTTP path: anonymizer blocking, spoofing, and rate limits.

The gateway runs with a MaxMind database built in the test and, where the client IP matters, with the
test client (127.0.0.1) as its only trusted proxy, so ``X-Forwarded-For`` decides the address checked.
Rate limits use an injected clock shared by the limiter and the admission store.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.harness.fake_clock import FakeClock
from tests.harness.geo_mmdb import ANONYMOUS_IP_TYPE, anonymous_record, write_database
from tests.harness.stack import base_config, body_of, concurrent_units_used, conversation_id_of, session_body

VPN, PUBLIC_PROXY, RESIDENTIAL, HOSTING, TOR, CLEAN = (
    "198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5", "203.0.113.9")


@pytest.fixture
def anonymous_db(tmp_path):
    return write_database(tmp_path / "anon.mmdb", ANONYMOUS_IP_TYPE, {
        f"{VPN}/32": anonymous_record(vpn=True),
        f"{PUBLIC_PROXY}/32": anonymous_record(public_proxy=True),
        f"{RESIDENTIAL}/32": anonymous_record(residential_proxy=True),
        f"{HOSTING}/32": anonymous_record(hosting=True),
        f"{TOR}/32": anonymous_record(tor=True),
        "2001:db8:dead::/48": anonymous_record(vpn=True),
    })


def from_ip(ip):
    return {"X-Forwarded-For": ip}


def protected_config(db, *, trusted=True, **security):
    config = base_config(cap=100)
    config["Security"].update({"BlockVpn": True, "BlockProxy": True, "BlockDatacenter": True, "BlockTor": True,
                               **security})
    config["GeoIp"] = {"AnonymousIpDatabase": str(db)}
    if trusted:
        config["ForwardedHeaders"] = {"KnownProxies": ["127.0.0.1"]}
    return config


@pytest.mark.parametrize(("ip", "message"), [
    (VPN, "VPN detected."),
    (PUBLIC_PROXY, "Proxy detected."),
    (RESIDENTIAL, "Proxy detected."),
    (HOSTING, "Datacenter IP detected."),
    (TOR, "Tor exit node detected."),
    ("2001:db8:dead::7", "VPN detected."),
    (f"::ffff:{VPN}", "VPN detected."),  # IPv4-mapped IPv6 is the same address
])
async def test_anonymizers_get_403_with_the_originals_messages(stack_factory, anonymous_db, ip, message):
    stack = await stack_factory(config=protected_config(anonymous_db))
    response = await stack.request_session(headers=from_ip(ip))
    assert (response.code, body_of(response)) == (403, {"message": message})
    assert (await stack.gateway.store.counts())["active"] == 0


async def test_clean_unknown_and_private_addresses_pass(stack_factory, anonymous_db):
    stack = await stack_factory(config=protected_config(anonymous_db))
    for ip in (CLEAN, "10.1.2.3", "2001:db8:beef::1"):
        assert (await stack.request_session(headers=from_ip(ip))).code == 200, ip


async def test_a_flag_that_is_off_lets_that_kind_through(stack_factory, anonymous_db):
    stack = await stack_factory(config=protected_config(anonymous_db, BlockTor=False, BlockDatacenter=False))
    assert (await stack.request_session(headers=from_ip(TOR))).code == 200
    assert (await stack.request_session(headers=from_ip(HOSTING))).code == 200
    assert (await stack.request_session(headers=from_ip(VPN))).code == 403


async def test_a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(stack_factory, anonymous_db):
    # No trusted proxies: the header is ignored, the peer (loopback) is what is checked, and passes.
    stack = await stack_factory(config=protected_config(anonymous_db, trusted=False, RateLimitHourly=1))
    assert (await stack.request_session(headers=from_ip(VPN))).code == 200
    # ...and it cannot be used to escape a limit either: a different forged address is the same client.
    second = await stack.request_session(headers=from_ip(CLEAN))
    assert (second.code, body_of(second)) == (429, {"message": "Hourly rate limit exceeded."})


async def test_hourly_limit_is_an_exact_sliding_window_with_honest_retry_after(stack_factory, anonymous_db):
    clock = FakeClock()
    config = base_config(cap=100)
    config["Security"].update({"RateLimitHourly": 2})
    stack = await stack_factory(config=config, clock=clock)
    first = await stack.request_session()
    assert first.code == 200
    assert first.headers["RateLimit-Policy"].startswith('"hourly";q=2;w=3600')
    clock.advance(600)
    assert (await stack.request_session()).code == 200
    refused = await stack.request_session()
    assert (refused.code, body_of(refused)) == (429, {"message": "Hourly rate limit exceeded."})
    # The first hit leaves the window 3000 s from now: not a second earlier.
    assert int(refused.headers["Retry-After"]) == 3000
    assert "RateLimit" in refused.headers
    clock.advance(2999.5)
    assert (await stack.request_session()).code == 429
    clock.advance(0.5)
    assert (await stack.request_session()).code == 200


async def test_daily_refusal_consumes_nothing_of_the_other_limits(stack_factory):
    clock = FakeClock()
    config = base_config(cap=100)
    config["Security"].update({"RateLimitHourly": 5, "RateLimitDaily": 1, "RateLimitConcurrency": 3})
    stack = await stack_factory(config=config, clock=clock)
    assert (await stack.request_session()).code == 200
    for _ in range(3):
        refused = await stack.request_session()
        assert body_of(refused) == {"message": "Daily rate limit exceeded."}
    policy = refused.headers["RateLimit"]
    assert '"daily"' in policy


async def test_100_parallel_requests_against_a_concurrency_limit_of_5_admit_exactly_5(stack_factory):
    config = base_config(cap=3)  # 3 get sessions, 2 more wait in the queue: both count as concurrent
    config["Security"].update({"RateLimitConcurrency": 5})
    stack = await stack_factory(config=config)
    responses = await asyncio.gather(*(stack.request_session() for _ in range(100)))
    codes = sorted(r.code for r in responses)
    assert codes.count(200) == 3
    assert codes.count(202) == 2
    assert codes.count(429) == 95
    refused = next(r for r in responses if r.code == 429)
    assert body_of(refused) == {"message": "Too many concurrent sessions from your IP."}
    assert int(refused.headers["Retry-After"]) > 0


async def test_client_identifier_keys_the_limits_and_per_ip_limits_stop_rotation(stack_factory):
    config = base_config(cap=100)
    config["Security"].update({"RateLimitConcurrency": 1, "PerIpRateLimitConcurrency": 3})
    stack = await stack_factory(config=config)
    assert (await stack.request_session(session_body(clientIdentifier="alice"))).code == 200
    again = await stack.request_session(session_body(clientIdentifier="alice"))
    assert (again.code, body_of(again)) == (429, {"message": "Too many concurrent sessions for this client."})
    assert (await stack.request_session(session_body(clientIdentifier="bob"))).code == 200
    assert (await stack.request_session(session_body(clientIdentifier="carol"))).code == 200
    rotated = await stack.request_session(session_body(clientIdentifier="dave"))
    assert (rotated.code, body_of(rotated)) == (429, {"message": "Too many concurrent sessions from your IP."})


@pytest.mark.parametrize(("prefix", "refused_at"), [(None, 3), (48, 3), (128, None)])
async def test_ipv6_clients_are_counted_by_their_subnet(stack_factory, prefix, refused_at):
    # One IPv6 customer holds a whole /64 (often a /56 or /48): rotating addresses inside it must not
    # escape the per-IP limit, while IPv4 stays the single address.
    config = base_config(cap=100)
    config["Security"].update({"PerIpRateLimitHourly": 2})
    if prefix is not None:
        config["Security"]["Ipv6PrefixLength"] = prefix
    config["ForwardedHeaders"] = {"KnownProxies": ["127.0.0.1"]}
    stack = await stack_factory(config=config)
    codes = [(await stack.request_session(headers=from_ip(f"2001:db8:1:0:{i:x}::{i + 1:x}"))).code for i in range(4)]
    if refused_at is None:
        assert codes == [200, 200, 200, 200]
    else:
        assert codes[:refused_at - 1] == [200] * (refused_at - 1) and set(codes[refused_at - 1:]) == {429}
    # Another /64 (and, with /48, another /48) is another client; IPv4 neighbours are distinct addresses.
    assert (await stack.request_session(headers=from_ip("2001:db9::1"))).code == 200
    assert (await stack.request_session(headers=from_ip("198.51.100.1"))).code == 200
    assert (await stack.request_session(headers=from_ip("198.51.100.2"))).code == 200


async def test_the_concurrent_count_returns_to_zero_after_every_kind_of_ending(stack_factory):
    clock = FakeClock()
    config = base_config(cap=1)
    config["Security"].update({"RateLimitConcurrency": 5})
    config["Concurrency"]["SessionLeaseSeconds"] = 600
    stack = await stack_factory(config=config, clock=clock)

    # 1. the webhook
    first = body_of(await stack.request_session())
    assert await concurrent_units_used(stack) == 1
    assert (await stack.end(conversation_id_of(first["webSocketUrl"]))).code == 200
    assert await concurrent_units_used(stack) == 0

    # 2. a platform failure on the direct path (the request never happened: refunded)
    await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "error"})
    assert (await stack.request_session()).code == 502
    assert await concurrent_units_used(stack) == 0

    # 3. Leave while queued
    active = body_of(await stack.request_session())
    waiting = body_of(await stack.request_session())
    assert await concurrent_units_used(stack) == 2
    assert await stack.gateway.service.leave(waiting["uniqueRequestId"]) is True
    assert await concurrent_units_used(stack) == 1

    # 4. a queued request whose platform call fails
    waiting = body_of(await stack.request_session())
    failed = stack.outcome(waiting["uniqueRequestId"])
    await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "error"})
    assert (await stack.end(conversation_id_of(active["webSocketUrl"]))).code == 200
    await asyncio.wait_for(failed, 10)
    assert await concurrent_units_used(stack) == 0

    # 5. a reclaimed lease (the webhook never comes): the unit expires with the session lease
    assert (await stack.request_session()).code == 200
    assert await concurrent_units_used(stack) == 1
    clock.advance(601)
    await stack.gateway.store.reap()
    # Expired units are dropped on the next limiter call; the next request sees a count of zero.
    response = await stack.request_session()
    assert response.code == 200
    assert await concurrent_units_used(stack) == 1  # only the new one


async def test_an_unreadable_rate_limit_report_does_not_undo_a_decision_already_made(stack_factory):
    config = base_config(cap=0)
    config["Security"].update({"RateLimitConcurrency": 5})
    stack = await stack_factory(config=config)

    def unreadable(*args, **kwargs):
        raise ValueError("fault injected: report of the wrong shape")

    stack.gateway.protection._plan.verdict = unreadable
    response = await stack.request_session()
    assert response.code == 202  # queued, and answered as such
    assert "RateLimit" not in response.headers
    request_id = body_of(response)["uniqueRequestId"]
    assert await stack.gateway.store.queue_ids() == [request_id]
    assert await concurrent_units_used(stack) == 1  # its unit counts, as it waits
