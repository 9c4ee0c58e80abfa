"""The RateLimit-Policy / RateLimit / Retry-After values (draft-ietf-httpapi-ratelimit-headers-11 syntax)."""

from __future__ import annotations

import pytest

from ratelimit import Decision, Policy, Rule, RuleState, rate_limit_headers
from ratelimit.headers import rate_limit_policy, sf_string

CONCURRENT = Rule(policy=Policy.CONCURRENT, subject="client:id:a", limit=1)
HOURLY = Rule(policy=Policy.HOURLY, subject="client:id:a", limit=3)
DAILY = Rule(policy=Policy.DAILY, subject="client:id:a", limit=20)
IP_HOURLY = Rule(policy=Policy.HOURLY, subject="ip:10.0.0.1", limit=10)
POLICY = '"hourly";q=3;w=3600, "daily";q=20;w=86400, "concurrent";q=1;qu="concurrent-requests"'


def state(rule: Rule, used: int, reset: int) -> RuleState:
    return RuleState(rule=rule, used=used, remaining=max(0, rule.limit - used), reset_seconds=reset)


def allowed(*states: RuleState) -> Decision:
    return Decision(allowed=True, refused=None, retry_after_seconds=None, states=states)


def test_allowed_reports_every_policy_and_the_one_with_least_remaining() -> None:
    headers = rate_limit_headers(allowed(state(CONCURRENT, 0, 0), state(HOURLY, 1, 1800), state(DAILY, 5, 80000)))
    assert headers == {"RateLimit-Policy": POLICY, "RateLimit": '"concurrent";r=1'}
    headers = rate_limit_headers(allowed(state(CONCURRENT, 0, 0), state(HOURLY, 2, 1800), state(DAILY, 5, 80000)))
    assert headers["RateLimit"] == '"hourly";r=1;t=1800'


def test_ties_go_to_the_longer_reset() -> None:
    headers = rate_limit_headers(allowed(state(HOURLY, 1, 1800), state(DAILY, 18, 80000)))
    assert headers["RateLimit"] == '"daily";r=2;t=80000'


def test_a_full_concurrent_policy_tells_its_next_expiry() -> None:
    headers = rate_limit_headers(allowed(state(CONCURRENT, 1, 7200), state(HOURLY, 1, 3600)))
    assert headers["RateLimit"] == '"concurrent";r=0;t=7200'


def test_refused_reports_the_refusing_policy_and_retry_after() -> None:
    decision = Decision(
        allowed=False,
        refused=HOURLY,
        retry_after_seconds=2600,
        states=(state(CONCURRENT, 1, 60), state(HOURLY, 3, 2600), state(DAILY, 3, 86000)),
    )
    assert rate_limit_headers(decision) == {
        "RateLimit-Policy": POLICY,
        "RateLimit": '"hourly";r=0;t=2600',
        "Retry-After": "2600",
    }


def test_client_and_ip_limits_of_one_policy_advertise_the_smaller_quota() -> None:
    headers = rate_limit_headers(allowed(state(HOURLY, 1, 3600), state(IP_HOURLY, 9, 100)))
    assert headers == {"RateLimit-Policy": '"hourly";q=3;w=3600', "RateLimit": '"hourly";r=1;t=100'}


def test_no_rules_no_headers() -> None:
    assert rate_limit_headers(allowed()) == {}
    assert rate_limit_policy(()) is None


def test_custom_windows_are_advertised() -> None:
    rule = Rule(policy=Policy.HOURLY, subject="ip:x", limit=7, window_seconds=60)
    assert rate_limit_policy((rule,)) == '"hourly";q=7;w=60'


@pytest.mark.parametrize(("value", "encoded"), [("hourly", '"hourly"'), ('a"b\\c', '"a\\"b\\\\c"')])
def test_sf_string_escapes(value: str, encoded: str) -> None:
    assert sf_string(value) == encoded


@pytest.mark.parametrize("value", ["caf\u00e9", "line\nbreak", "\x7f"])
def test_sf_string_refuses_what_a_string_cannot_carry(value: str) -> None:
    with pytest.raises(ValueError, match="not a Structured Field String"):
        sf_string(value)
