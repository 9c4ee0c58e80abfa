"""Client protection on the admission path: anonymizer blocking and rate limits, with their accounting.

The checks run in the original's order (IP security, then rate limits) before the admission decision.
The rate limiter's concurrency unit for a request (its id is the request id) must live exactly as long as
what it counts:

* while the request waits in the queue, it is held for :data:`QUEUED_HOLD_SECONDS` and given back when
  the request leaves (``Leave``, abandonment) or fails;
* once a platform session exists, it is re-armed to expire with the session lease, and a small binding
  ``conversation id -> unit`` lets the session-ended webhook give it back at once;
* when a request never happened (queue full, platform failure) everything it consumed is refunded.

So the count never leaks: every unit has an expiry, and every ending gives it back sooner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import jsonutil
from gateway.settings import Settings
from geo.checker import AnonymizerChecker, BlockPolicy
from ratelimit import Decision, RateLimiter, Rule, StorageError, rate_limit_headers, refusal_message, rules_for

log = logging.getLogger("gateway.protection")

#: How long a queued request's concurrency unit is held without news. Waiting clients are removed by the
#: hub's abandonment rules well before this; it only bounds a unit whose gateway process died.
QUEUED_HOLD_SECONDS = 3600
BINDING_PREFIX = "iqra:rl:session:"


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A request refused by protection: the status, the client's message and extra headers."""

    status: int
    message: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """Who a request is counted against: its client key (identifier or IP) and its IP."""

    client_identifier: str | None
    ip: str

    @property
    def client_key(self) -> str:
        # The kind prefix keeps an identifier that looks like an IP from sharing that IP's counters.
        return f"id:{self.client_identifier}" if self.client_identifier else f"ip:{self.ip}"


class ProtectionUnavailable(Exception):
    """The rate-limit store cannot be reached."""


class ClientProtection:
    """Anonymizer checks and rate limits for one gateway process."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, *, clock: Callable[[], float],
                 checker: AnonymizerChecker | None = None) -> None:
        self._security = settings.security
        s = settings.security
        # With every limit at 0 (unlimited, the default) there are no rules for anyone: skip building them.
        self._any_limit = any((s.rate_limit_hourly, s.rate_limit_daily, s.rate_limit_concurrency,
                               s.per_ip_rate_limit_hourly, s.per_ip_rate_limit_daily,
                               s.per_ip_rate_limit_concurrency))
        self._session_lease = settings.concurrency.session_lease_seconds
        self._redis = redis
        self._limiter = RateLimiter(redis, clock=clock)
        self.checker = checker if checker is not None else build_checker(settings)

    # -- IP security ---------------------------------------------------------------------------------

    def check_ip(self, ip: str) -> Refusal | None:
        if self.checker is None:
            return None
        verdict = self.checker.check(ip)
        if verdict.allowed:
            return None
        log.info("refused %s: %s", ip, verdict.reason)
        return Refusal(status=403, message=verdict.reason or "Access denied.", headers={})

    # -- rate limits ---------------------------------------------------------------------------------

    def rules(self, subject: Subject) -> tuple[Rule, ...]:
        if not self._any_limit:
            return ()
        s = self._security
        return rules_for(client_key=subject.client_key, ip=subject.ip, hourly=s.rate_limit_hourly,
                         daily=s.rate_limit_daily, concurrency=s.rate_limit_concurrency,
                         per_ip_hourly=s.per_ip_rate_limit_hourly, per_ip_daily=s.per_ip_rate_limit_daily,
                         per_ip_concurrency=s.per_ip_rate_limit_concurrency)

    async def acquire(self, request_id: str, subject: Subject) -> tuple[Refusal | None, dict[str, str]]:
        """Consume one request and one concurrency unit for ``subject``, all or nothing.

        :return: a refusal (429) or None, and the ``RateLimit`` headers to send either way.
        """
        rules = self.rules(subject)
        if not rules:
            return None, {}
        decision = await self._guard(self._limiter.acquire(request_id, rules, hold_seconds=QUEUED_HOLD_SECONDS))
        headers = rate_limit_headers(decision)
        if decision.allowed:
            return None, headers
        return Refusal(status=429, message=self._message(decision, subject), headers=headers), headers

    async def session_started(self, request_id: str, subject: Subject, conversation_session_id: str) -> None:
        """The platform session exists: the unit now expires with the session lease, and the webhook can
        find it by conversation id."""
        rules = self.rules(subject)
        if not any(rule.limit for rule in rules if rule.policy == "concurrent"):
            return
        await self._guard(self._limiter.touch(request_id, rules, hold_seconds=self._session_lease))
        binding = jsonutil.dumps({"unit": request_id, "cid": subject.client_identifier, "ip": subject.ip})
        await self._guard(self._redis.set(BINDING_PREFIX + conversation_session_id.lower(), binding,
                                          ex=int(self._session_lease) + 60))

    async def session_ended(self, conversation_session_id: str) -> None:
        """The webhook: give the session's concurrency unit back now."""
        raw = await self._guard(self._redis.getdel(BINDING_PREFIX + conversation_session_id.lower()))
        if not raw:
            return
        data = jsonutil.loads(raw)
        subject = Subject(client_identifier=data.get("cid"), ip=data["ip"])
        await self._guard(self._limiter.release(data["unit"], self.rules(subject)))

    async def left(self, request_id: str, subject: Subject) -> None:
        """A waiting request left the queue (or was abandoned): its hits stay, its unit is given back."""
        rules = self.rules(subject)
        if rules:
            await self._guard(self._limiter.release(request_id, rules))

    async def refund(self, request_id: str, subject: Subject) -> None:
        """The request never happened (queue full, platform failure): undo everything it consumed."""
        rules = self.rules(subject)
        if rules:
            await self._guard(self._limiter.refund(request_id, rules))

    def _message(self, decision: Decision, subject: Subject) -> str:
        assert decision.refused is not None
        return refusal_message(decision.refused, by_client_identifier=bool(subject.client_identifier))

    @staticmethod
    async def _guard(awaitable):  # type: ignore[no-untyped-def]
        try:
            return await awaitable
        except (StorageError, RedisError) as exc:
            raise ProtectionUnavailable(str(exc)) from exc

    def close(self) -> None:
        if self.checker is not None:
            self.checker.close()


def build_checker(settings: Settings) -> AnonymizerChecker | None:
    """The MaxMind checker for the settings, or None when no protection is configured at all."""
    s, g = settings.security, settings.geoip
    policy = BlockPolicy(block_vpn=s.block_vpn, block_proxy=s.block_proxy, block_datacenter=s.block_datacenter,
                         block_tor=s.block_tor, hosting_asns=frozenset(g.hosting_asns),
                         allowed_networks=tuple(g.allowed_networks), blocked_networks=tuple(g.blocked_networks))
    checker = AnonymizerChecker(policy, anonymous_ip_database=g.anonymous_ip_database, asn_database=g.asn_database)
    if not checker.enabled:
        checker.close()
        return None
    return checker


def subject_of(data: dict) -> Subject:
    """The subject recorded in a queue entry's data."""
    request = data.get("request", {})
    return Subject(client_identifier=request.get("clientIdentifier") or None, ip=data["ip"])
