"""The compiled plan gives exactly what the general limiter API gives: keys, arguments, headers, messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimit import InvalidRule, RateLimiter, rate_limit_headers, refusal_message, rules_for
from ratelimit.plan import LimitPlan
from tests.harness.fake_clock import FakeClock


class _NoRedis:
    """The limiter only registers scripts when built; building call arguments needs no server."""

    def register_script(self, text):
        return text


limits = st.fixed_dictionaries({
    name: st.one_of(st.just(0), st.integers(1, 50))
    for name in ("hourly", "daily", "concurrency", "per_ip_hourly", "per_ip_daily", "per_ip_concurrency")
})


def _reference(limit_values, client_key, ip):
    clock = FakeClock()
    limiter = RateLimiter(_NoRedis(), clock=clock)
    return limiter, rules_for(client_key=client_key, ip=ip, **limit_values), clock


def _wire(args):
    return tuple(value.decode() if isinstance(value, bytes) else str(value) for value in args)


@settings(max_examples=300, deadline=None)
@given(limit_values=limits, client_key=st.sampled_from(["id:alice", "ip:10.0.0.1", "id:ümlaut"]),
       ip=st.sampled_from(["10.0.0.1", "2001:db8::1"]), data=st.data())
def test_the_plan_matches_the_limiter_and_the_header_functions(limit_values, client_key, ip, data):
    limiter, rules, clock = _reference(limit_values, client_key, ip)
    plan = LimitPlan(**limit_values)
    assert plan.empty == (not rules)
    if not rules:
        return
    now_ms = round(clock() * 1000)
    reference = limiter.acquire_call("unit-1", rules, hold_seconds=900)
    call = plan.acquire_call("unit-1", client_key=client_key, ip=ip, now_ms=now_ms, hold_ms=900_000)
    assert call.keys == reference.keys
    # the same arguments on the wire (the plan sends its constant ones pre-encoded)
    assert _wire(call.args) == _wire(reference.args)
    assert all(isinstance(value, bytes) for value in call.args[2:])
    touch = plan.touch_call("unit-1", client_key=client_key, ip=ip, now_ms=now_ms, hold_ms=600_000)
    reference_touch = limiter.touch_call("unit-1", rules, hold_seconds=600)
    assert (touch is None) == (reference_touch is None)
    if touch is not None:
        assert (touch.keys, touch.args) == (reference_touch.keys, reference_touch.args)

    values = []
    for rule in rules:
        refused = data.draw(st.booleans())
        values += [data.draw(st.integers(0, rule.limit + 3)), data.draw(st.integers(0, 10**8)), int(refused)]
    allowed = not any(values[2::3])
    by_identifier = client_key.startswith("id:")
    decision = limiter.decision(reference, [int(allowed), *values])
    verdict = plan.verdict(values, allowed=allowed, by_client_identifier=by_identifier)
    assert verdict.allowed == decision.allowed
    assert verdict.headers == rate_limit_headers(decision)
    expected_message = (None if decision.allowed else
                        refusal_message(decision.refused, by_client_identifier=by_identifier))
    assert verdict.message == expected_message
    assert plan.decision(values, allowed=allowed, client_key=client_key, ip=ip) == decision


def test_a_malformed_report_is_an_error_not_a_verdict():
    plan = LimitPlan(hourly=3)
    with pytest.raises(ValueError):
        plan.verdict([1, 2], allowed=True, by_client_identifier=False)
    with pytest.raises(ValueError):
        plan.verdict([1, 2, 0], allowed=False, by_client_identifier=False)  # refused, but by no rule


def test_negative_limits_are_refused_when_the_plan_is_built():
    with pytest.raises(InvalidRule):
        LimitPlan(daily=-1)
