"""Rate-limit value objects: what is limited (:class:`Rule`) and what a check found (:class:`Decision`).

Pure: no I/O, no clock. The limiter (:mod:`ratelimit.limiter`) turns rules into one atomic Redis script call
and hands back a :class:`Decision`; the header helpers (:mod:`ratelimit.headers`) read decisions.

Subjects are free-form strings namespaced by kind: ``client:<client key>`` for the limits of
``Security.RateLimitConcurrency`` / ``RateLimitHourly`` / ``RateLimitDaily`` and ``ip:<ip>`` for the optional
per-IP limits that stop a client from escaping its limits by rotating identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ratelimit.errors import InvalidRule

CLIENT_PREFIX = "client:"
IP_PREFIX = "ip:"


class Policy(StrEnum):
    """The kinds of limit; the values double as the policy names in the ``RateLimit*`` headers."""

    CONCURRENT = "concurrent"
    HOURLY = "hourly"
    DAILY = "daily"

    @property
    def is_window(self) -> bool:
        """Whether the policy counts hits in a sliding window (as opposed to units held at once)."""
        return self is not Policy.CONCURRENT


#: The window a windowed policy gets when a rule does not name one.
DEFAULT_WINDOW_SECONDS: dict[Policy, int] = {Policy.HOURLY: 3600, Policy.DAILY: 86400}
#: How long a subject's set of hits keeps each hit: the longest window a rule may have. One set serves all
#: of a subject's windows, and every call keeps this much history whatever windows it carries, so callers
#: with different rules (nodes of a fleet during a configuration rollout) never trim each other's counts.
#: ``UNITS_HISTORY_MS`` in ``lua/lib_units.lua`` is the same figure.
HITS_HISTORY_SECONDS = 86400


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One limit on one subject.

    :param policy: what is counted: concurrent units, or hits in an hourly or daily sliding window.
    :param subject: whom it is counted for, e.g. ``"client:abc"`` or ``"ip:1.2.3.4"``.
    :param limit: the most units held at once / hits in any window; must be > 0 (0 = unlimited is
        represented by leaving the rule out, see :func:`rules_for`).
    :param window_seconds: the window length for ``hourly`` / ``daily`` (default 3600 / 86400, at most
        :data:`HITS_HISTORY_SECONDS`); must be ``None`` for ``concurrent``.
    :raises InvalidRule: on any inconsistent field.
    """

    policy: Policy
    subject: str
    limit: int
    window_seconds: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.policy, Policy):
            try:
                object.__setattr__(self, "policy", Policy(self.policy))
            except ValueError:
                raise InvalidRule(f"unknown rate-limit policy {self.policy!r}") from None
        if not isinstance(self.subject, str) or not self.subject:
            raise InvalidRule("a rate-limit rule needs a non-empty subject")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit <= 0:
            raise InvalidRule(f"rate-limit {self.policy} limit must be a positive integer, got {self.limit!r}")
        if self.policy.is_window:
            window = self.window_seconds if self.window_seconds is not None else DEFAULT_WINDOW_SECONDS[self.policy]
            if isinstance(window, bool) or not isinstance(window, int) or not 0 < window <= HITS_HISTORY_SECONDS:
                raise InvalidRule(f"rate-limit {self.policy} window must be a whole number of seconds from 1 to "
                                  f"{HITS_HISTORY_SECONDS} (hits are kept for a day), got {window!r}")
            object.__setattr__(self, "window_seconds", window)
        elif self.window_seconds is not None:
            raise InvalidRule("a concurrent rate-limit rule has no window")

    @property
    def store_name(self) -> str:
        """The name of the set this rule counts in, before its subject: the windows of a subject share one
        set of hits (``hits``); a concurrent rule has its own (``concurrent``)."""
        return "hits" if self.policy.is_window else "concurrent"

    @property
    def is_ip(self) -> bool:
        """Whether the subject is an IP address (a per-IP rule)."""
        return self.subject.startswith(IP_PREFIX)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleState:
    """How one rule stood right after a check (after consuming, when the check admitted).

    :param rule: the rule.
    :param used: units held / hits in the window now.
    :param remaining: ``max(0, limit - used)``.
    :param reset_seconds: whole seconds (rounded up) until ``remaining`` grows by at least one, i.e. until
        a request would be admitted by this rule when ``remaining`` is 0. For a window with no hits it is the
        window length (any hit made now stays that long). For ``concurrent`` it is the next unit
        expiry as things stand (an estimate: units are released early and renewed; see the limiter), and 0
        when nothing is held.
    """

    rule: Rule
    used: int
    remaining: int
    reset_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of :meth:`ratelimit.RateLimiter.acquire`.

    :param allowed: whether every rule admitted (and so every rule consumed a unit / hit).
    :param refused: when refused, the refusing rule with the longest wait (the first such rule on ties);
        its message is what the client should see.
    :param retry_after_seconds: when refused, the longest wait among all refusing rules, in whole seconds
        rounded up; ``None`` when allowed.
    :param states: one :class:`RuleState` per rule, in the order the rules were given.
    """

    allowed: bool
    refused: Rule | None
    retry_after_seconds: int | None
    states: tuple[RuleState, ...]


def _nonnegative(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRule(f"{name} must be a non-negative integer (0 = unlimited), got {value!r}")
    return value


def rules_for(
    *,
    client_key: str,
    ip: str,
    hourly: int,
    daily: int,
    concurrency: int,
    per_ip_hourly: int = 0,
    per_ip_daily: int = 0,
    per_ip_concurrency: int = 0,
) -> tuple[Rule, ...]:
    """Build the rules for one request, leaving out every limit that is 0 (unlimited, as the original).

    The order is concurrent, hourly, daily for the client, then the same for the IP: that is the order the
    original checked in, and the order of :attr:`Decision.states`.

    The caller should make ``client_key`` say which kind of key it is (e.g. ``"id:<clientIdentifier>"`` or
    ``"ip:<ip>"``); otherwise a client could send another client's IP as its identifier and share that
    client's counters.

    :param client_key: the client's key: its ``clientIdentifier`` when given, else its IP.
    :param ip: the client's IP, for the per-IP rules.
    :param hourly: ``Security.RateLimitHourly``.
    :param daily: ``Security.RateLimitDaily``.
    :param concurrency: ``Security.RateLimitConcurrency``.
    :param per_ip_hourly: hourly limit per IP, whatever the identifier.
    :param per_ip_daily: daily limit per IP.
    :param per_ip_concurrency: concurrent sessions per IP.
    :raises InvalidRule: on a negative limit or an empty key.
    """
    if not client_key:
        raise InvalidRule("client_key must not be empty")
    client_limits = (
        (Policy.CONCURRENT, "concurrency", concurrency),
        (Policy.HOURLY, "hourly", hourly),
        (Policy.DAILY, "daily", daily),
    )
    ip_limits = (
        (Policy.CONCURRENT, "per_ip_concurrency", per_ip_concurrency),
        (Policy.HOURLY, "per_ip_hourly", per_ip_hourly),
        (Policy.DAILY, "per_ip_daily", per_ip_daily),
    )
    rules: list[Rule] = []
    for prefix, key, limits in ((CLIENT_PREFIX, client_key, client_limits), (IP_PREFIX, ip, ip_limits)):
        for policy, name, limit in limits:
            if _nonnegative(name, limit) == 0:
                continue
            if not key:
                raise InvalidRule(f"{name} is set but the key for it is empty")
            rules.append(Rule(policy=policy, subject=prefix + key, limit=limit))
    return tuple(rules)


_CONCURRENT_IP = "Too many concurrent sessions from your IP."
# The original only knew IP keys. When the key is the client's identifier, "from your IP" would be wrong
# (another device on the same IP may be fine), so the message names the client instead.
_CONCURRENT_CLIENT = "Too many concurrent sessions for this client."
_WINDOW_MESSAGES = {Policy.HOURLY: "Hourly rate limit exceeded.", Policy.DAILY: "Daily rate limit exceeded."}


def refusal_message(rule: Rule, *, by_client_identifier: bool) -> str:
    """The 429 message for a refusing rule, worded as the original middleware's.

    :param rule: :attr:`Decision.refused`.
    :param by_client_identifier: whether the client rules are keyed by a ``clientIdentifier`` (rather than
        by the IP, when the request gave none); per-IP rules always speak of the IP.
    """
    if rule.policy is Policy.CONCURRENT:
        return _CONCURRENT_CLIENT if by_client_identifier and not rule.is_ip else _CONCURRENT_IP
    return _WINDOW_MESSAGES[rule.policy]
