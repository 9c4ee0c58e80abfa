"""Client protection on the admission path: anonymizer blocking and rate limits, with their accounting.

The checks run in the original's order: IP security here, in the process, then the rate limits, which
are checked and consumed inside the admission decision's own Lua call (this module prepares that part of
the call and reads its reply), so a request costs one round trip with or without limits, and a refusal
(or a full queue) consumes nothing. The rate limiter's concurrency unit for a request (its id is the
request id) must live exactly as long as what it counts:

* while the request waits in the queue, it is held for :data:`QUEUED_HOLD_SECONDS`, renewed by
  :meth:`ClientProtection.renew_queued_units` as long as the entry waits, and given back when the request
  leaves (``Leave``, abandonment) or fails;
* once a platform session exists, the activation (same Lua call) re-arms it to expire with the session
  lease and binds ``conversation id -> unit``, so the session-ended webhook gives it back at once;
* when a request never happened (platform failure) everything it consumed is refunded.

So the count never leaks: every unit has an expiry, and every ending gives it back sooner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.background import Periodic
from gateway.model import jsonutil
from gateway.model.entry import DamagedEntry, QueueEntry
from gateway.admission.keys import KeySpace
from gateway.admission.store import UnitBinding
from gateway.config.settings import Settings
from geo.checker import AnonymizerChecker
from geo.policy import BlockPolicy
from geo.networks import rate_limit_subject
from ratelimit import RateLimiter, Rule, StorageError, UnitCall
from ratelimit.plan import LimitPlan

log = logging.getLogger("gateway.queue.protection")

#: How long a queued request's concurrency unit is held without being renewed. Waiting clients are removed
#: by the hub's abandonment rules, which give the unit back; this only bounds a unit whose release was
#: lost (its gateway process died, or the store was down at that moment).
QUEUED_HOLD_SECONDS = 900
#: How often the units of waiting entries are renewed: well inside the hold, so a renewal can be missed.
RENEW_INTERVAL_SECONDS = QUEUED_HOLD_SECONDS / 3
#: How often the MaxMind database files are checked for replacement.
GEO_RELOAD_SECONDS = 5.0
#: Where a session's binding to its concurrency unit is kept, after the rate-limit prefix.
BINDING_INFIX = "session:"
#: Queue entries read per HSCAN step while renewing units (bounds the time one call holds Redis).
RENEW_CHUNK = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A request refused by protection: the status, the client's message and extra headers."""

    status: int
    message: str
    headers: dict[str, str]


class Subject(NamedTuple):
    """Who a request is counted against: its client key (identifier or IP) and its IP. (A named tuple: one
    is made for every request.)"""

    client_identifier: str | None
    ip: str

    @property
    def client_key(self) -> str:
        return self.client_key_for(self.ip)

    def client_key_for(self, ip_key: str) -> str:
        """The client key when the IP is counted as ``ip_key`` (an IPv6 client as its subnet)."""
        # The kind prefix keeps an identifier that looks like an IP from sharing that IP's counters.
        return f"id:{self.client_identifier}" if self.client_identifier else f"ip:{ip_key}"


class ProtectionUnavailable(Exception):
    """The rate-limit store cannot be reached."""


class ClientProtection:
    """Anonymizer checks and rate limits for one gateway process."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, *, clock: Callable[[], float],
                 key_prefix: str = KeySpace().rate_limits, checker: AnonymizerChecker | None = None) -> None:
        s = settings.security
        # Every request gets the same rules with its own subjects: compiled once. With every limit at 0
        # (unlimited, the default) the plan is empty and requests carry no rate-limit work at all.
        self._plan = LimitPlan(key_prefix=key_prefix, hourly=s.rate_limit_hourly, daily=s.rate_limit_daily,
                               concurrency=s.rate_limit_concurrency, per_ip_hourly=s.per_ip_rate_limit_hourly,
                               per_ip_daily=s.per_ip_rate_limit_daily,
                               per_ip_concurrency=s.per_ip_rate_limit_concurrency)
        self._any_limit = not self._plan.empty
        self._session_lease = settings.concurrency.session_lease_seconds
        self._ipv6_prefix = s.ipv6_prefix_length
        self._redis = redis
        self._clock = clock
        self._limiter = RateLimiter(redis, key_prefix=key_prefix, clock=clock)
        #: Where a session's binding to its concurrency unit is kept (the conversation id follows).
        self.binding_prefix = key_prefix + BINDING_INFIX
        self.checker = checker if checker is not None else build_checker(settings)
        self._upkeep: list[Periodic] = []

    @property
    def limits_enabled(self) -> bool:
        """Whether any rate limit is configured."""
        return self._any_limit

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
        client_key, ip = self._keys(subject)
        return self._plan.rules(client_key, ip)

    def _keys(self, subject: Subject) -> tuple[str, str]:
        """The client key and the IP key ``subject`` is counted under: an IPv6 client by its network of
        ``Security.Ipv6PrefixLength`` bits, so rotating addresses inside its subnet escapes no limit."""
        ip = subject.ip if ":" not in subject.ip else rate_limit_subject(subject.ip, self._ipv6_prefix)
        return subject.client_key_for(ip), ip

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    def limit_call(self, request_id: str, subject: Subject) -> UnitCall | None:
        """The rate-limit part of the admission call for ``subject`` (None when no limit applies)."""
        if not self._any_limit:
            return None
        client_key, ip = self._keys(subject)
        return self._plan.acquire_call(request_id, client_key=client_key, ip=ip,
                                       now_ms=self._now_ms(), hold_ms=QUEUED_HOLD_SECONDS * 1000)

    def verdict(self, *, limited: bool, values: tuple[int, ...],
                subject: Subject) -> tuple[Refusal | None, dict[str, str]]:
        """Read the rate-limit report of an admission call.

        :return: a refusal (429) or None, and the ``RateLimit`` headers to send either way.
        :raises ProtectionUnavailable: when the report is malformed.
        """
        try:
            verdict = self._plan.verdict(values, allowed=not limited,
                                         by_client_identifier=bool(subject.client_identifier))
        except (ValueError, TypeError) as exc:
            raise ProtectionUnavailable(f"unreadable rate-limit report: {exc}") from exc
        if verdict.allowed:
            return None, verdict.headers
        assert verdict.message is not None
        return Refusal(status=429, message=verdict.message, headers=verdict.headers), verdict.headers

    def _touch_call(self, request_id: str, subject: Subject, hold_seconds: float) -> UnitCall | None:
        client_key, ip = self._keys(subject)
        return self._plan.touch_call(request_id, client_key=client_key, ip=ip,
                                     now_ms=self._now_ms(), hold_ms=max(1, round(hold_seconds * 1000)))

    def activation_units(self, request_id: str, subject: Subject, conversation_session_id: str) -> UnitBinding | None:
        """What the activation of ``request_id``'s session does for its concurrency unit (None without a
        concurrent limit): re-arm it to expire with the session lease and bind it to the conversation id."""
        if not self._any_limit:
            return None
        call = self._touch_call(request_id, subject, self._session_lease)
        if call is None:
            return None
        binding = jsonutil.dumps({"unit": request_id, "cid": subject.client_identifier, "ip": subject.ip})
        return UnitBinding(call=call, key=self.binding_prefix + conversation_session_id.lower(), value=binding,
                           ttl_seconds=int(self._session_lease) + 60)

    async def session_ended(self, conversation_session_id: str) -> None:
        """The webhook: give the session's concurrency unit back now."""
        raw = await self._guard(self._redis.getdel(self.binding_prefix + conversation_session_id.lower()))
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

    async def renew_queued_units(self, entries_key: str) -> int:
        """Renew the concurrency units of every waiting (or dispatching) entry for another hold.

        ``entries_key`` is the admission store's HASH of entry data. One HSCAN step and one pipelined batch
        of renewals per :data:`RENEW_CHUNK` entries. A renewal only moves an expiry later, so the longer
        hold of a session that started meanwhile is kept. Returns how many concurrent sets held the unit
        of a renewed entry (an entry counted against a client and an IP limit counts twice).
        """
        if not self._any_limit:
            return 0
        renewed, cursor = 0, 0
        while True:
            cursor, chunk = await self._guard(self._redis.hscan(entries_key, cursor, count=RENEW_CHUNK))
            calls = []
            for request_id, raw in chunk.items():
                rid = request_id.decode() if isinstance(request_id, bytes) else request_id
                try:
                    subject = subject_of(QueueEntry.from_json(raw))
                except DamagedEntry:
                    # One unreadable entry must not stop the others' renewal; its unit lapses by itself.
                    log.warning("queue entry %s has unreadable data; its rate-limit unit is not renewed", rid)
                    continue
                call = self._touch_call(rid, subject, QUEUED_HOLD_SECONDS)
                if call is not None:
                    calls.append(call)
            if calls:
                renewed += await self._guard(self._limiter.extend_many(calls))
            if not cursor:
                return renewed

    @staticmethod
    async def _guard(awaitable):  # type: ignore[no-untyped-def]
        try:
            return await awaitable
        except (StorageError, RedisError) as exc:
            raise ProtectionUnavailable(str(exc)) from exc

    # -- upkeep ----------------------------------------------------------------------------------------

    def start(self, entries_key: str) -> None:
        """Start the upkeep: queued units renewed while their entries wait (``entries_key`` is the admission
        store's HASH of entries), MaxMind databases replaced on disk picked up without a restart."""
        self._upkeep = []
        if self.limits_enabled:
            self._upkeep.append(Periodic(lambda: self._renew_quietly(entries_key), interval=RENEW_INTERVAL_SECONDS,
                                         name="rate-limit unit renewal", log=log))
        if self.checker is not None:
            self._upkeep.append(Periodic(self._reload_databases, interval=GEO_RELOAD_SECONDS,
                                         name="MaxMind database reload", log=log))
        for loop in self._upkeep:
            loop.start()

    async def stop(self) -> None:
        for loop in self._upkeep:
            await loop.stop()

    async def _renew_quietly(self, entries_key: str) -> None:
        try:
            await self.renew_queued_units(entries_key)
        except ProtectionUnavailable as exc:
            log.warning("could not renew the rate-limit units of waiting requests: %s", exc)

    async def _reload_databases(self) -> None:
        # A bad new file keeps the old one in use (the loop logs it) and is tried again later.
        assert self.checker is not None
        if self.checker.maybe_reload():
            log.info("reloaded the MaxMind database(s)")

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


def subject_of(entry: QueueEntry) -> Subject:
    """Who a queue entry is counted against."""
    return Subject(client_identifier=entry.request.client_identifier, ip=entry.ip)
