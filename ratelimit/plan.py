"""A request's rate limits compiled once from the settings: per request only the subjects differ.

Every request of a deployment gets the same rules (the same policies and limits), keyed by its client and
its IP. Building :class:`~ratelimit.rules.Rule` objects, a :class:`~ratelimit.rules.Decision` and the header
values for each request costs more than the admission decision itself, so :class:`LimitPlan` does the
constant part once: the key suffixes, the limit arguments of the Lua call and the ``RateLimit-Policy``
value. Per request it builds the keys and arguments (:meth:`LimitPlan.acquire_call`) and reads the reply
(:meth:`LimitPlan.verdict`) straight from integers. The results are exactly those of
:class:`~ratelimit.limiter.RateLimiter` with :func:`~ratelimit.rules.rules_for` and
:func:`~ratelimit.headers.rate_limit_headers` (a test compares them on random replies).

Pure: no I/O, no clock (the caller passes the time in).
"""

from __future__ import annotations

from typing import NamedTuple

from ratelimit.headers import rate_limit_policy
from ratelimit.limiter import KEY_EXPIRY_SLACK_MS, UnitCall, _ceil_seconds, rule_spec
from ratelimit.rules import CLIENT_PREFIX, IP_PREFIX, Decision, Policy, Rule, RuleState, refusal_message, rules_for


class LimitVerdict(NamedTuple):
    """What one request's limits said (a named tuple: one is made per request, and a frozen dataclass
    costs several times as much to build).

    :param allowed: every rule admitted (and, unless the caller's script decided otherwise, consumed).
    :param headers: ``RateLimit-Policy`` and ``RateLimit``, plus ``Retry-After`` when refused.
    :param message: the 429 message when refused, else None.
    """

    allowed: bool
    headers: dict[str, str]
    message: str | None = None


class LimitPlan:
    """The rules of :func:`~ratelimit.rules.rules_for` for fixed limits, ready to key by client and IP.

    :param key_prefix: the limiter's key prefix (keys are those of
        :meth:`~ratelimit.limiter.RateLimiter.key_for`).
    :param limits: the limits, as the keyword arguments of :func:`~ratelimit.rules.rules_for` (0 = unlimited).
    :raises InvalidRule: on a negative limit.
    """

    def __init__(self, *, key_prefix: str = "rl:", hourly: int = 0, daily: int = 0, concurrency: int = 0,
                 per_ip_hourly: int = 0, per_ip_daily: int = 0, per_ip_concurrency: int = 0) -> None:
        # A sample subject validates the limits once and fixes the rule order; the rules of any request are
        # these with other subjects.
        sample = rules_for(client_key="-", ip="-", hourly=hourly, daily=daily, concurrency=concurrency,
                           per_ip_hourly=per_ip_hourly, per_ip_daily=per_ip_daily,
                           per_ip_concurrency=per_ip_concurrency)
        self._sample = sample
        self._key_heads = tuple(f"{key_prefix}{rule.store_name}:{CLIENT_PREFIX if not rule.is_ip else IP_PREFIX}"
                                for rule in sample)
        self._by_ip = tuple(rule.is_ip for rule in sample)
        # The sets of a request (a subject's windows share one) and the rules argument, with a key head in
        # place of each key: the heads stand for the same sets whatever the subjects.
        heads, self._spec = rule_spec(self._key_heads, sample)
        by_ip = dict(zip(self._key_heads, self._by_ip, strict=True))
        self._set_heads = tuple((head, by_ip[head]) for head in heads)
        # Sent as bytes, the form they take on the wire (the Redis client packs bytes faster than integers),
        # once per deployment: they are the same for every request.
        self._slack_arg = str(KEY_EXPIRY_SLACK_MS).encode()
        self._tails: dict[int, tuple[bytes, ...]] = {}  # hold in ms -> the call's constant arguments
        self._concurrent = tuple(i for i, rule in enumerate(sample) if rule.policy is Policy.CONCURRENT)
        # The same for every request: the policies and quotas do not depend on the subject.
        self._policy_header = rate_limit_policy(sample)
        self._names = tuple(rule.policy.value for rule in sample)
        self._limits = tuple(rule.limit for rule in sample)
        self._windowed = tuple(rule.policy.is_window for rule in sample)

    @property
    def empty(self) -> bool:
        """No limit is set: requests carry no rate-limit work at all."""
        return not self._sample

    @property
    def has_concurrent(self) -> bool:
        return bool(self._concurrent)

    def rules(self, client_key: str, ip: str) -> tuple[Rule, ...]:
        """The full rules for one subject (for the general limiter API and for diagnostics)."""
        return tuple(Rule(policy=rule.policy, subject=(IP_PREFIX + ip) if rule.is_ip else (CLIENT_PREFIX + client_key),
                          limit=rule.limit, window_seconds=rule.window_seconds) for rule in self._sample)

    def _keys(self, client_key: str, ip: str, indexes: range | tuple[int, ...]) -> tuple[str, ...]:
        heads, by_ip = self._key_heads, self._by_ip
        return tuple([heads[i] + (ip if by_ip[i] else client_key) for i in indexes])

    def acquire_call(self, unit_id: str, *, client_key: str, ip: str, now_ms: int, hold_ms: int) -> UnitCall:
        """KEYS / ARGV of an acquire for one request (see ``lib_units.lua``); the caller checks ``empty``."""
        keys = tuple([head + (ip if by_ip else client_key) for head, by_ip in self._set_heads])
        tail = self._tails.get(hold_ms)
        if tail is None:
            tail = self._tails[hold_ms] = (str(hold_ms).encode(), self._slack_arg, self._spec)
        return UnitCall(keys, (now_ms, unit_id, *tail), ())

    def touch_call(self, unit_id: str, *, client_key: str, ip: str, now_ms: int, hold_ms: int) -> UnitCall | None:
        """KEYS / ARGV of a touch of the request's concurrent units; None without a concurrent limit."""
        if not self._concurrent:
            return None
        keys = self._keys(client_key, ip, self._concurrent)
        return UnitCall(keys, (now_ms, unit_id, hold_ms, KEY_EXPIRY_SLACK_MS), ())

    def verdict(self, values: tuple[int, ...] | list[int], *, allowed: bool, by_client_identifier: bool) -> LimitVerdict:
        """Read an acquire's report (``used, wait_ms, refused`` per rule, in rule order).

        :raises ValueError: when the report does not have one triple per rule, or refuses without a rule.
        """
        n = len(self._sample)
        if len(values) != 3 * n:
            raise ValueError(f"expected {3 * n} rate-limit values, got {len(values)}")
        limits = self._limits
        best = -1  # the state RateLimit reports: least remaining, then longest reset, then earliest rule
        best_remaining = best_reset = 0
        refused = -1
        retry_after = 0
        i = 0
        # One pass over the flat report, with plain integer arithmetic: this runs for every request.
        for at in range(0, 3 * n, 3):
            remaining = limits[i] - values[at]
            if remaining < 0:
                remaining = 0
            reset = -(-values[at + 1] // 1000)  # whole seconds, rounded up (never early)
            if reset < 0:
                reset = 0
            if best < 0 or remaining < best_remaining or (remaining == best_remaining and reset > best_reset):
                best, best_remaining, best_reset = i, remaining, reset
            if values[at + 2] and (refused < 0 or reset > retry_after):
                refused, retry_after = i, reset
            i += 1
        if not allowed and refused < 0:
            raise ValueError("the rate-limit report refuses without naming a refusing rule")
        report = refused if refused >= 0 else best
        if report == best:
            remaining, reset = best_remaining, best_reset
        else:
            remaining = max(0, limits[report] - values[3 * report])
            reset = _ceil_seconds(int(values[3 * report + 1]))
        item = f'"{self._names[report]}";r={remaining}'
        if self._windowed[report] or (remaining == 0 and reset > 0):
            item = f"{item};t={reset}"
        headers = {"RateLimit-Policy": self._policy_header, "RateLimit": item} if self._policy_header else {}
        if allowed:
            return LimitVerdict(allowed=True, headers=headers)
        headers["Retry-After"] = str(retry_after)
        message = refusal_message(self._sample[refused], by_client_identifier=by_client_identifier)
        return LimitVerdict(allowed=False, headers=headers, message=message)

    def decision(self, values: tuple[int, ...] | list[int], *, allowed: bool, client_key: str, ip: str) -> Decision:
        """The full :class:`~ratelimit.rules.Decision` of a report (slower; for tests and diagnostics)."""
        rules = self.rules(client_key, ip)
        states = []
        refused: Rule | None = None
        retry_after: int | None = None
        for i, rule in enumerate(rules):
            used, wait_ms, rule_refused = values[3 * i: 3 * i + 3]
            wait = _ceil_seconds(int(wait_ms))
            states.append(RuleState(rule=rule, used=used, remaining=max(0, rule.limit - used), reset_seconds=wait))
            if rule_refused and (retry_after is None or wait > retry_after):
                refused, retry_after = rule, wait
        return Decision(allowed=allowed, refused=refused, retry_after_seconds=retry_after, states=tuple(states))


__all__ = ["LimitPlan", "LimitVerdict"]
