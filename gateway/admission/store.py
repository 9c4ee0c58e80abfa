"""Admission store: concurrency slot leases and the waiting queue, shared by every gateway process.

Each operation is one Lua script in ``gateway/lua`` (with ``lib_store.lua`` prepended), run with a
single EVALSHA, so every decision is atomic across processes sharing one Redis. This module only
builds ``KEYS``/``ARGV`` and turns replies into value objects.

Lifecycle of a request: :meth:`AdmissionStore.admit` gives it a *pending lease* (it may call the
platform now) or queues it; :meth:`~AdmissionStore.claim` later hands queued entries to a dispatcher
with pending leases; :meth:`~AdmissionStore.activate` turns a pending lease into an *active lease*
keyed by the conversation session id once the platform session exists; the session-ended webhook
calls :meth:`~AdmissionStore.end_session`. Expired leases are reclaimed by every admit and claim.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from gateway.model import jsonutil
from gateway.admission.types import (
    _OUTCOMES,
    _REMOVED,
    _RENEWALS,
    AdmitResult,
    Caps,
    ClaimedEntry,
    DuplicateRequestError,
    EndResult,
    Outcome,
    RequestState,
    RequestStatus,
    Removed,
    Renewal,
    StoreReset,
    UnitBinding,
)
from gateway.admission.keys import DEFAULT_PREFIX, AdmissionKeys
from gateway.redis.client import run_script
from gateway.redis.replication import ReplicaWait
from ratelimit import UnitCall
from ratelimit.limiter import UNITS_LIBRARY

log = logging.getLogger("gateway.admission.store")

#: Message of the tombstone left by :meth:`AdmissionStore.remove`.
LEFT_QUEUE_MESSAGE = "left the queue"
#: Longest request, lease or conversation id accepted (they become parts of key names).
MAX_ID_LENGTH = 256
#: Queue entries an eligibility scan inspects at most per call (see ``lib_store.lua``).
DEFAULT_SCAN_LIMIT = 1000

_OPERATIONS = ("admit", "claim", "reap", "activate", "release_lease", "end_session", "requeue_front",
               "set_outcome", "status", "remove", "extend_lease")
#: Operations that also carry rate-limit unit work (their scripts embed ``ratelimit/lua/lib_units.lua``).
_WITH_UNITS = frozenset({"admit", "activate"})
#: The writes a failover must not lose once the gateway acted on them: an answered admission, a claim the
#: platform is called for, a recorded session, an ended one. With ``replica_wait`` they wait for replicas.
_REPLICATED = frozenset({"admit", "claim", "activate", "end_session"})
_OUTCOME_STATUSES = frozenset({RequestState.READY, RequestState.FAILED})


@cache
def _prelude() -> str:
    return (resources.files("gateway.admission") / "lua" / "lib_store.lua").read_text(encoding="utf-8")


@cache
def _script_source(operation: str) -> str:
    """The prelude plus one operation's script, read from the package once per process."""
    prelude = _prelude()
    if operation in _WITH_UNITS:
        prelude += "\n" + UNITS_LIBRARY
    body = (resources.files("gateway.admission") / "lua" / f"{operation}.lua").read_text(encoding="utf-8")
    return prelude + "\n" + body


def status_of_reply(reply: Any) -> RequestStatus | None:
    """The :class:`RequestStatus` in a reply of ``status.lua`` (or of a script that returns the same four
    fields first, see :meth:`AdmissionStore.script`); ``None`` for the empty reply of an unknown id."""
    if not reply:
        return None
    status, position, url, message = _text(reply[0]), int(reply[1]), _text(reply[2]), _text(reply[3])
    return RequestStatus(status=RequestState(status), position=position or None, web_socket_url=url or None,
                         message=message or None)


def _text(value: Any) -> str:
    # The client may or may not decode responses; the store works with either.
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _num(value: float) -> str:
    # Fixed-point keeps microseconds; repr() could produce exponents Lua's tonumber reads but humans don't.
    return f"{value:.6f}"


def _raise_if_reset(exc: ResponseError) -> None:
    if str(exc).startswith("EPOCH"):
        raise StoreReset(str(exc)) from exc


def _claimed_entries(flat: list[Any], start: int, count: int) -> tuple[ClaimedEntry, ...]:
    entries = []
    for i in range(count):
        rid, campaign, lease, data = flat[start + 4 * i: start + 4 * i + 4]
        entries.append(ClaimedEntry(request_id=_text(rid), campaign=_text(campaign), lease_id=_text(lease),
                                    data=_entry_data(rid, data)))
    return tuple(entries)


def _entry_data(request_id: Any, raw: Any) -> dict:
    """An entry's stored data; ``{}`` when it cannot be read, so that one damaged entry fails alone
    (its dispatch cannot rebuild a request from it) instead of losing the whole reply, and with it the
    other entries the same call claimed."""
    try:
        data = jsonutil.loads(raw) if raw else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        log.error("queued request %s has unreadable entry data", _text(request_id))
        return {}
    return data


def new_claim_token() -> str:
    """A fresh claim token: the prefix of the lease ids one claim creates (see ``claim.lua``)."""
    return secrets.token_hex(8)


def _require_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_ID_LENGTH} characters")
    return value


def _require_seconds(value: float, what: str) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


class AdmissionStore:
    """Async wrapper over the admission scripts; one per Redis client.

    :param redis: a ``redis.asyncio`` client (real or embedded, see :func:`gateway.redis.client.open_redis`).
    :param key_prefix: prefix of every key (:class:`gateway.admission.keys.AdmissionKeys`).
    :param clock: wall clock in seconds; its value is passed to the scripts as ``now``.
    :param scan_limit: most queue entries one eligibility scan inspects. If a scan stops at the limit
        with room left, the new request is queued rather than risk overtaking an older eligible entry.
    :param replica_wait: wait for replicas after the writes a failover must not lose
        (:mod:`gateway.redis.replication`); none by default.
    """

    def __init__(self, redis: aioredis.Redis, *, key_prefix: str = DEFAULT_PREFIX,
                 clock: Callable[[], float] = time.time, scan_limit: int = DEFAULT_SCAN_LIMIT,
                 epoch: Callable[[], str | None] = lambda: None, replica_wait: ReplicaWait | None = None) -> None:
        if scan_limit < 1:
            raise ValueError("scan_limit must be >= 1")
        self._epoch = epoch
        self._replica_wait = replica_wait
        self._redis = redis
        self._keys = AdmissionKeys(prefix=key_prefix)
        self._shared_keys = tuple(self._keys.shared())
        self._clock = clock
        self._scan_limit = scan_limit
        # register_script talks to no server: it hashes the text once; EVALSHA reloads on NOSCRIPT.
        self._scripts = {op: redis.register_script(_script_source(op)) for op in _OPERATIONS}

    @property
    def scan_limit(self) -> int:
        """Most queue entries one call inspects, and so the most one admission can claim."""
        return self._scan_limit

    @property
    def keys(self) -> AdmissionKeys:
        return self._keys

    async def _run(self, operation: str, args: list[Any] | tuple[Any, ...],
                   extra_keys: list[str] | tuple[str, ...] | None = None) -> Any:
        keys = self._shared_keys + tuple(extra_keys) if extra_keys else self._shared_keys
        wait = self._replica_wait if operation in _REPLICATED else None
        return await run_script(self._redis, self._scripts[operation], keys, (_num(self._clock()), *args), wait=wait)

    def script(self, source: str) -> Callable[[list[str], list[Any]], Awaitable[Any]]:
        """Another component's script that reads the admission state in the same atomic step as its own
        work (the hub's ``Register``): it runs with ``lib_store.lua`` prepended, so it sees the shared keys
        as ``KEYS[1..13]``, ``now`` as ``ARGV[1]`` and the prelude's functions (``request_status``). The
        returned coroutine function takes the script's own keys (from ``KEYS[14]``) and arguments (from
        ``ARGV[2]``)."""
        registered = self._redis.register_script(_prelude() + "\n" + source)

        async def run(keys: list[str], args: list[Any]) -> Any:
            return await run_script(self._redis, registered, self._shared_keys + tuple(keys),
                                    (_num(self._clock()), *args))

        return run

    def request_keys(self, request_id: str) -> list[str]:
        """The request's own keys, as ``status.lua`` takes them: its outcome, then its tombstone."""
        return [self._keys.outcome(request_id), self._keys.tombstone(request_id)]


    async def admit(self, *, request_id: str, campaign: str, data: dict, caps: Caps,
                    pending_lease_seconds: float, max_queue_length: int,
                    limits: UnitCall | None = None, token: str | None = None) -> AdmitResult:
        """Admit now (pending lease), queue, or refuse a request — one round trip.

        :param request_id: new unique id of the request.
        :param campaign: campaign id (for its cap and for FIFO fairness across campaigns).
        :param data: JSON-serialisable entry data, returned unchanged in :class:`ClaimedEntry`.
        :param caps: the caps to apply now.
        :param pending_lease_seconds: how long the pending lease covers the platform call.
        :param max_queue_length: at this length the request is refused with ``FULL``.
        :param limits: the request's rate limits (:meth:`ratelimit.RateLimiter.acquire_call` with the request
            id as unit id), checked first and consumed only for ``ADMITTED`` and ``QUEUED``, in the same call.
        :param token: this call's nonce (:func:`new_claim_token`); a caller that loses the reply settles it
            with :meth:`settle_claim` (the leases it took are named after it), and the call does nothing
            if it only runs after that.
        :raises DuplicateRequestError: if ``request_id`` is already known.
        :raises ValueError: on bad arguments (including non-JSON ``data``).
        """
        _require_id(request_id, "request_id")
        if not isinstance(campaign, str):
            raise ValueError("campaign must be a string")
        _require_seconds(pending_lease_seconds, "pending_lease_seconds")
        if not isinstance(max_queue_length, int) or max_queue_length < 0:
            raise ValueError("max_queue_length must be an int >= 0")
        try:
            data_json = jsonutil.dumps_ascii(data)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"entry data is not JSON-serialisable: {exc}") from exc
        nonce = token or new_claim_token()
        args: tuple[Any, ...] = (request_id, campaign, data_json, caps.global_cap, caps.campaign_caps_json(),
                                 _num(pending_lease_seconds), max_queue_length, nonce, self._scan_limit)
        keys = [*self.request_keys(request_id), self._keys.epoch, self._keys.claim_fence(nonce), self._keys.control]
        if limits is not None:
            if limits.args[1] != request_id:
                raise ValueError("the rate-limit unit id must be the request id")
            args += limits.args
            keys += limits.keys
        try:
            reply = await self._run("admit", (*args, self._epoch() or ""), keys)
        except ResponseError as exc:
            if "DUPLICATE" in str(exc):
                raise DuplicateRequestError(f"request id {request_id!r} is already known") from exc
            _raise_if_reset(exc)
            raise
        outcome = _OUTCOMES[reply[0]]
        m = int(reply[4])
        limit_values = tuple(reply[5:5 + m]) if m else ()  # Lua numbers arrive as Python ints
        claimed = _claimed_entries(reply, 5 + m, int(reply[3])) if reply[3] else ()
        if outcome is Outcome.ADMITTED:
            return AdmitResult(outcome=outcome, lease_id=_text(reply[1]), claimed=claimed, limit_values=limit_values)
        if outcome is Outcome.QUEUED:
            return AdmitResult(outcome=outcome, position=int(reply[2]), claimed=claimed, limit_values=limit_values)
        return AdmitResult(outcome=outcome, claimed=claimed, limit_values=limit_values)

    async def activate(self, *, lease_id: str, conversation_session_id: str, request_id: str | None,
                       session_lease_seconds: float, units: UnitBinding | None = None) -> None:
        """Turn a pending lease into an active lease keyed by the conversation session id.

        Works even after the pending lease was reaped (the platform session exists, so the slot is
        taken again and a requeued entry leaves the queue). If the end webhook already came, no slot
        is held.

        :param session_lease_seconds: the active lease is reclaimed after this if no end webhook comes.
        :param units: the request's rate-limit unit, re-armed and bound to the conversation in the same
            call (or given back, when the session already ended).
        """
        _require_id(lease_id, "lease_id")
        conv = _require_id(conversation_session_id, "conversation_session_id").lower()
        _require_seconds(session_lease_seconds, "session_lease_seconds")
        args: tuple[Any, ...] = (lease_id, conv, request_id or "", _num(session_lease_seconds))
        keys: tuple[str, ...] = ()
        if units is not None:
            args += (*units.call.args, units.value, int(units.ttl_seconds))
            keys = (units.key, *units.call.keys)
        result = _text(await self._run("activate", args, keys))
        if result != "activated":
            log.info("activate lease %s for conversation %s: %s", lease_id, conv, result)

    async def release_lease(self, lease_id: str) -> bool:
        """Give a pending lease's slot back (the platform call failed).

        :returns: ``False`` if the lease was not pending (unknown, released or reaped already).
        """
        _require_id(lease_id, "lease_id")
        return bool(await self._run("release_lease", [lease_id]))

    async def end_session(self, conversation_session_id: str) -> EndResult:
        """Handle the session-ended webhook; idempotent, case-insensitive ids, remembered 24 h."""
        conv = _require_id(conversation_session_id, "conversation_session_id").lower()
        return EndResult(_text(await self._run("end_session", [conv])))

    async def claim(self, *, caps: Caps, pending_lease_seconds: float, limit: int,
                    token: str | None = None) -> list[ClaimedEntry]:
        """Reap expired leases, then claim up to ``limit`` oldest eligible entries with pending leases.

        :param token: the claim token (:func:`new_claim_token`), chosen by the caller so that it can
            :meth:`settle_claim` what this call took if the reply is lost; a fresh one by default.
        """
        _require_seconds(pending_lease_seconds, "pending_lease_seconds")
        if not isinstance(limit, int) or limit < 0:
            raise ValueError("limit must be an int >= 0")
        if limit == 0:
            return []
        token = _require_id(token, "token") if token is not None else new_claim_token()
        try:
            reply = await self._run("claim", [caps.global_cap, caps.campaign_caps_json(), _num(pending_lease_seconds),
                                              limit, token, self._scan_limit, "claim", self._epoch() or ""],
                                    [self._keys.claim_fence(token), self._keys.epoch, self._keys.control])
        except ResponseError as exc:
            _raise_if_reset(exc)
            raise
        return list(_claimed_entries(reply, 1, int(reply[0])))

    async def settle_claim(self, token: str, *, pending_lease_seconds: float, limit: int) -> list[ClaimedEntry]:
        """What a :meth:`claim` with ``token`` holds, whether or not it has run; it will claim nothing after.

        For a caller whose claim reply was lost: it serves the entries returned (their pending leases
        renewed to cover the platform call from now on). Idempotent: repeat it until it answers.

        :param limit: the ``limit`` the claim was given.
        """
        _require_id(token, "token")
        _require_seconds(pending_lease_seconds, "pending_lease_seconds")
        if not isinstance(limit, int) or limit < 0:
            raise ValueError("limit must be an int >= 0")
        reply = await self._run("claim", [0, "{}", _num(pending_lease_seconds), limit, token, self._scan_limit,
                                          "settle", ""],
                                [self._keys.claim_fence(token), self._keys.epoch, self._keys.control])
        return list(_claimed_entries(reply, 1, int(reply[0])))

    async def extend_lease(self, entry: ClaimedEntry, *, pending_lease_seconds: float) -> Renewal:
        """Renew the pending lease of an entry being dispatched, before another platform call for it."""
        _require_id(entry.lease_id, "lease_id")
        _require_id(entry.request_id, "request_id")
        _require_seconds(pending_lease_seconds, "pending_lease_seconds")
        reply = await self._run("extend_lease", [entry.lease_id, entry.request_id, _num(pending_lease_seconds)])
        return _RENEWALS[int(reply)]

    async def requeue_front(self, entry: ClaimedEntry) -> int:
        """Release the entry's pending lease and put the request at the front of the queue.

        Also works for a direct admission (never queued): the entry is created from ``entry``.

        :returns: its position (1); 0 if it was not requeued because it already has an outcome or is
            held by another dispatcher now; -1 if the client left the queue meanwhile (nobody else gives
            back what the request holds). The lease is released in any case.
        """
        _require_id(entry.request_id, "request_id")
        data_json = jsonutil.dumps_ascii(entry.data)
        return int(await self._run("requeue_front", [entry.request_id, entry.lease_id, entry.campaign, data_json],
                                   self.request_keys(entry.request_id)))

    async def set_outcome(self, request_id: str, *, status: RequestState | str, web_socket_url: str | None = None,
                          message: str | None = None, ttl_seconds: float) -> None:
        """Record "ready" or "failed" for ``ttl_seconds`` (then "expired" for 24 h); removes the entry."""
        _require_id(request_id, "request_id")
        if status not in _OUTCOME_STATUSES:
            raise ValueError(f"status must be one of {sorted(_OUTCOME_STATUSES)}, got {status!r}")
        _require_seconds(ttl_seconds, "ttl_seconds")
        await self._run("set_outcome", [request_id, str(status), web_socket_url or "", message or "",
                                        _num(ttl_seconds)], self.request_keys(request_id))

    async def status(self, request_id: str) -> RequestStatus | None:
        """Current status of a request, or ``None`` if it was never seen."""
        _require_id(request_id, "request_id")
        return status_of_reply(await self._run("status", [request_id], self.request_keys(request_id)))

    async def remove(self, request_id: str, *, message: str = LEFT_QUEUE_MESSAGE) -> Removed:
        """Drop a queued (or dispatching) entry because the client left or is gone; it then reads "failed"
        with ``message`` (what its client is told) for 24 h."""
        _require_id(request_id, "request_id")
        reply = await self._run("remove", [request_id, message], self.request_keys(request_id))
        return _REMOVED[int(reply)]

    async def entry_data(self, request_id: str) -> dict | None:
        """The ``data`` a queued or dispatching entry was admitted with, or None when it is not waiting."""
        _require_id(request_id, "request_id")
        raw = await self._redis.hget(self._keys.entries, request_id)
        return jsonutil.loads(raw) if raw else None

    async def queue_ids(self) -> list[str]:
        """Queued request ids, front first (position = index + 1)."""
        return [_text(v) for v in await self._redis.zrange(self._keys.queue, 0, -1)]

    async def reap(self) -> int:
        """Reclaim expired leases now; returns how many."""
        return int(await self._run("reap", []))

    async def counts(self) -> dict:
        """``{"active": n, "pending": n, "queued": n, "campaigns": {campaign: leases in use}}``.

        One MULTI/EXEC round trip, so the numbers are a consistent snapshot; expired leases that no
        call has reaped yet are still counted.
        """
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zcard(self._keys.active)
            pipe.zcard(self._keys.pending)
            pipe.zcard(self._keys.queue)
            pipe.hgetall(self._keys.in_use)
            active, pending, queued, in_use = await pipe.execute()
        return {"active": int(active), "pending": int(pending), "queued": int(queued),
                "campaigns": {_text(k): int(v) for k, v in in_use.items()}}

    async def ping(self) -> None:
        """Raise (a ``redis.exceptions.RedisError``) if the store is unreachable."""
        await self._redis.ping()
