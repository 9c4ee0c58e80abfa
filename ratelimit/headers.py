"""Response header values for a rate-limit decision: ``RateLimit-Policy``, ``RateLimit`` and ``Retry-After``.

Pure functions. The syntax follows draft-ietf-httpapi-ratelimit-headers-11 (May 2026), which uses HTTP
Structured Fields (RFC 9651): both fields are Lists of Items whose value is a String naming a policy.

* ``RateLimit-Policy``: one Item per policy with ``q`` (quota), and ``w`` (window, seconds) for the windowed
  policies. The concurrent policy carries ``qu="concurrent-requests"``, the draft's quota unit for
  concurrency, because the default unit ("requests", with no window) would announce a lifetime total.
  Example: ``"hourly";q=3;w=3600, "daily";q=20;w=86400, "concurrent";q=1;qu="concurrent-requests"``.
* ``RateLimit``: one Item, the most constrained policy, with ``r`` (remaining) and ``t`` (seconds until more
  quota is available). Example: ``"hourly";r=2;t=1800``.
* ``Retry-After`` (RFC 9110, delay-seconds) only when refused.

When a client limit and a per-IP limit share a policy name, ``RateLimit-Policy`` advertises the smaller
quota (what a single client can count on) rather than repeating the name, and ``RateLimit`` reports
whichever of them has the least remaining, so ``r`` never exceeds the advertised ``q``.
"""

from __future__ import annotations

from ratelimit.rules import Decision, Policy, Rule, RuleState

# The order of the policies in RateLimit-Policy; the field SHOULD stay the same from response to response.
_POLICY_ORDER = (Policy.HOURLY, Policy.DAILY, Policy.CONCURRENT)
_CONCURRENT_UNIT = "concurrent-requests"


def sf_string(value: str) -> str:
    """Serialize an RFC 9651 String (printable ASCII only, with ``"`` and ``\\`` escaped).

    :raises ValueError: on a character a Structured Field String cannot carry.
    """
    if any(not 0x20 <= ord(char) <= 0x7E for char in value):
        raise ValueError(f"not a Structured Field String: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_item(rule: Rule) -> str:
    """One Quota Policy Item of ``RateLimit-Policy`` for ``rule``."""
    item = f"{sf_string(rule.policy.value)};q={rule.limit}"
    if rule.window_seconds is not None:
        return f"{item};w={rule.window_seconds}"
    return f"{item};qu={sf_string(_CONCURRENT_UNIT)}"


def rate_limit_policy(rules: list[Rule] | tuple[Rule, ...]) -> str | None:
    """The ``RateLimit-Policy`` value for a request's rules, or ``None`` when there are none."""
    items = []
    for policy in _POLICY_ORDER:
        same = [rule for rule in rules if rule.policy is policy]
        if same:
            items.append(policy_item(min(same, key=lambda rule: rule.limit)))
    return ", ".join(items) or None


def most_constrained(decision: Decision) -> RuleState | None:
    """The state ``RateLimit`` reports: the refusing rule's when refused, else the one with least remaining.

    Ties go to the longer reset, then to the earlier rule.
    """
    if decision.refused is not None:
        for state in decision.states:
            if state.rule == decision.refused:
                return state
    if not decision.states:
        return None
    return min(decision.states, key=lambda state: (state.remaining, -state.reset_seconds))


def service_limit_item(state: RuleState) -> str:
    """One Service Limit Item of ``RateLimit`` for ``state``.

    ``t`` is left out for a concurrent policy with room left: it has no window, and the next expiry of a
    held unit says nothing about when the client may start sessions.
    """
    item = f"{sf_string(state.rule.policy.value)};r={state.remaining}"
    if state.rule.policy.is_window or (state.remaining == 0 and state.reset_seconds > 0):
        return f"{item};t={state.reset_seconds}"
    return item


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """The header fields to send with the response to the request that got ``decision``.

    :returns: ``RateLimit-Policy`` and ``RateLimit`` (nothing when no rule applied), plus ``Retry-After`` when
        the decision refused.
    """
    headers: dict[str, str] = {}
    policy = rate_limit_policy(tuple(state.rule for state in decision.states))
    state = most_constrained(decision)
    if policy is not None and state is not None:
        headers["RateLimit-Policy"] = policy
        headers["RateLimit"] = service_limit_item(state)
    if not decision.allowed and decision.retry_after_seconds is not None:
        headers["Retry-After"] = str(decision.retry_after_seconds)
    return headers
