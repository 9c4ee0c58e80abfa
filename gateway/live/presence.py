"""Which queued requests have live hub connections, kept in Redis so that every process sees them.

A process records a ``Register`` (:meth:`PresenceStore.register`), refreshes the requests of the hub
connections it hosts every few seconds (:meth:`PresenceStore.touch`, a heartbeat), and touches a
request once more when its last local connection goes. "Last seen" is therefore either a heartbeat of
a live connection or the moment the last one left; a process that dies simply stops heartbeating, so
its clients count as gone from their last heartbeat on. Every operation that must be atomic is one
Lua script in ``gateway/lua/presence_*.lua``.

Presence is indexed by time so that a reaper round reads only what is due: a never-registered request
sits in the ``waiting`` ZSET scored by when the reaper first saw it queued, a registered one in the
``last_seen`` ZSET scored by its last heartbeat. Its deadline is that score plus the register timeout
or the disconnect grace; the limits are applied when reading, so heartbeats need no configuration and
a changed limit applies to entries already waiting. :meth:`PresenceStore.scan` tracks new queue
members incrementally (see ``presence_scan.lua``) and forgets the presence of finished requests when
they come due, so no round walks the queue or a whole presence key.

The store also keeps the times at which queued requests were served (:meth:`record_served`), from
which :func:`gateway.live.positions.estimate_wait_seconds` derives the rate at which the queue moves.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from gateway.admission.store import AdmissionStore, status_of_reply
from gateway.admission.types import RequestStatus
from gateway.model.entry import QueueEntry

#: Request ids per heartbeat script call: bounds the time one EVALSHA holds Redis.
TOUCH_CHUNK = 500
#: Most new queue members tracked, and most due ids read per index, in one reaper round.
SCAN_LIMIT = 1000
#: Queue entries checked from the front when the front entry changed (entries put back by requeue_front).
FRONT_WINDOW = 100
#: Seconds after which a due entry that was being dispatched (so not queued) is looked at again.
DISPATCH_RECHECK = 5.0

_SCRIPTS = ("touch", "scan", "abandon")


@cache
def _script_source(name: str) -> str:
    return (resources.files("gateway.live") / "lua" / f"presence_{name}.lua").read_text(encoding="utf-8")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _num(value: float) -> str:
    return f"{value:.6f}"


class Registration(NamedTuple):
    """What :meth:`PresenceStore.register` found and did.

    :param status: where the request is now; ``None`` when the id was never seen.
    :param recorded: the presence was recorded; ``False`` when the request does not wait (any more), or
        waits but the reaper already abandoned it (:attr:`abandoned`).
    :param abandoned: it still waits, but the reaper took it: the client must not be told it waits.
    """

    status: RequestStatus | None
    recorded: bool
    abandoned: bool


class QueueSignature(NamedTuple):
    """What changes whenever some queued request's place or wait estimate may have (see
    :meth:`gateway.live.presence.PresenceStore.queue_signature`)."""

    length: int
    first: str | None
    last: str | None
    arrivals: str | None
    last_served: str | None


class Absence(StrEnum):
    """Why nobody waits for a queued entry any more (the reaper then removes it as abandoned)."""

    UNREGISTERED = "unregistered"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceRecord:
    """What is known about the hub presence of one queued request.

    :param request_id: the queued request.
    :param registered_at: time of its first ``Register``, or ``None`` if it never registered.
    :param last_seen: last time a live hub connection was confirmed for it (or the last one left).
    :param first_seen: when the reaper first saw it waiting; ``None`` once it registered (no longer needed).
    """

    request_id: str
    registered_at: float | None
    last_seen: float | None
    first_seen: float | None


def absence_of(record: PresenceRecord, *, now: float, register_timeout: float,
               disconnect_grace: float) -> Absence | None:
    """Why nobody waits for this record's request, or ``None`` if someone may still be waiting for it."""
    if record.registered_at is None:
        if record.first_seen is not None and now - record.first_seen >= register_timeout:
            return Absence.UNREGISTERED
        return None
    last = record.last_seen if record.last_seen is not None else record.registered_at
    if now - last >= disconnect_grace:
        return Absence.DISCONNECTED
    return None


def absent(records: Iterable[PresenceRecord], *, now: float, register_timeout: float,
           disconnect_grace: float) -> list[tuple[str, Absence]]:
    """Every request nobody waits for, with why, in queue order.

    :param records: presence of the queued requests.
    :param now: the current time (seconds, same clock as the records).
    :param register_timeout: seconds allowed between entering the queue and the first ``Register``.
    :param disconnect_grace: seconds a registered request may have no live hub connection.
    """
    out = []
    for record in records:
        absence = absence_of(record, now=now, register_timeout=register_timeout, disconnect_grace=disconnect_grace)
        if absence is not None:
            out.append((record.request_id, absence))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceKeys:
    """Key names of the presence store, under the gateway's prefix.

    :param prefix: prepended to every key (the admission store's prefix, e.g. ``iqra:``).
    """

    prefix: str

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}presence:{suffix}"

    @property
    def registered(self) -> str:
        """HASH request id -> time of its first Register."""
        return self._name("registered")

    @property
    def last_seen(self) -> str:
        """ZSET request id -> last time a live hub connection was confirmed (registered ids only)."""
        return self._name("last_seen")

    @property
    def waiting(self) -> str:
        """ZSET request id -> time the reaper first saw it queued (never-registered ids only)."""
        return self._name("waiting")

    @property
    def abandoned(self) -> str:
        """HASH request id -> time the reaper took it out of the queue."""
        return self._name("abandoned")

    @property
    def cursor(self) -> str:
        """HASH of the reaper's incremental tracking: highest queue score tracked, last front entry."""
        return self._name("cursor")

    @property
    def reaper_lock(self) -> str:
        """STRING held by the process running the current reaper round."""
        return self._name("reaper_lock")

    @property
    def served(self) -> str:
        """ZSET request id -> time a queued request was served (ready or failed)."""
        return self._name("served")


class PresenceStore:
    """Presence of hub connections per queued request, and the log of served requests.

    :param redis: the gateway's ``redis.asyncio`` client (real or embedded).
    :param admission: the admission store (for its queue and entry key names).
    :param key_prefix: prefix of every key.
    :param clock: wall clock in seconds, passed to the scripts as ``now``.
    :param served_window: seconds of served-request history kept for the wait estimate.
    """

    def __init__(self, redis: aioredis.Redis, *, admission: AdmissionStore, key_prefix: str,
                 clock: Callable[[], float] = time.time, served_window: float = 600.0) -> None:
        self._redis = redis
        self._admission = admission
        self.keys = PresenceKeys(prefix=key_prefix)
        self._clock = clock
        self._served_window = served_window
        self._scripts = {name: redis.register_script(_script_source(name)) for name in _SCRIPTS}
        # Register reads the admission state and records presence atomically: it runs with the store's prelude.
        self._register = admission.script(_script_source("register"))
        self._lock_token = secrets.token_hex(8)

    async def register(self, request_id: str) -> Registration:
        """A client registered for (or polled) ``request_id``: where it is now, and, while it waits, the
        record that someone waits for it, in one round trip (``presence_register.lua``)."""
        k = self.keys
        reply = await self._register([*self._admission.request_keys(request_id), k.registered, k.last_seen,
                                      k.waiting, k.abandoned], [request_id])
        if not reply:
            return Registration(status=None, recorded=False, abandoned=False)
        recorded = int(reply[4])
        return Registration(status=status_of_reply(reply), recorded=recorded == 1, abandoned=recorded == 0)

    async def touch(self, request_ids: Iterable[str]) -> int:
        """Mark live (or just left) connections of registered requests as seen now."""
        ids = list(dict.fromkeys(request_ids))
        touched = 0
        now = _num(self._clock())
        for start in range(0, len(ids), TOUCH_CHUNK):
            chunk = ids[start:start + TOUCH_CHUNK]
            touched += int(await self._scripts["touch"](keys=[self.keys.registered, self.keys.last_seen],
                                                        args=[now, *chunk]))
        return touched

    async def scan(self, *, register_timeout: float, disconnect_grace: float, limit: int = SCAN_LIMIT,
                   window: int = FRONT_WINDOW, recheck: float = DISPATCH_RECHECK) -> list[PresenceRecord]:
        """The presence of the queued requests past either limit, front first.

        Also tracks queue members new since the last call and forgets the presence of finished
        requests that came due (see ``presence_scan.lua``); the work is bounded by the arguments, not
        by the length of the queue.

        :param register_timeout: seconds allowed between first being seen queued and the first Register.
        :param disconnect_grace: seconds a registered request may have no live hub connection.
        :param limit: most new queue members tracked, and most due ids read per index, in this call.
        :param window: queue entries checked from the front when the front entry changed.
        :param recheck: seconds after which a due entry being dispatched is looked at again.
        """
        if limit < 1 or window < 1 or not recheck > 0:
            raise ValueError("limit and window must be >= 1 and recheck > 0")
        k, a = self.keys, self._admission.keys
        flat = await self._scripts["scan"](
            keys=[k.registered, k.last_seen, k.waiting, k.abandoned, k.cursor, a.queue, a.entries, a.seq],
            args=[_num(self._clock()), _num(register_timeout), _num(disconnect_grace), limit, window,
                  _num(recheck)])
        records = []
        for i in range(0, len(flat), 4):
            rid, registered, seen, first = (_text(v) for v in flat[i:i + 4])
            records.append(PresenceRecord(request_id=rid, registered_at=float(registered) if registered else None,
                                          last_seen=float(seen) if seen else None,
                                          first_seen=float(first) if first else None))
        return records

    async def abandon(self, request_id: str, *, register_timeout: float, disconnect_grace: float) -> Absence | None:
        """Atomically confirm and mark an abandonment; ``None`` if the request is no longer abandoned."""
        k = self.keys
        reply = _text(await self._scripts["abandon"](
            keys=[k.registered, k.last_seen, k.waiting, k.abandoned, self._admission.keys.queue],
            args=[_num(self._clock()), request_id, _num(register_timeout), _num(disconnect_grace)]))
        return Absence(reply) if reply else None

    async def try_lead(self, seconds: float) -> bool:
        """Take (or keep) the reaper lease for ``seconds``, so one process reaps per round."""
        ms = max(1, int(seconds * 1000))
        if await self._redis.set(self.keys.reaper_lock, self._lock_token, px=ms, nx=True):
            return True
        # Already ours: extend it (two commands, but only the holder ever writes its own token).
        current = await self._redis.get(self.keys.reaper_lock)
        if current is not None and _text(current) == self._lock_token:
            await self._redis.pexpire(self.keys.reaper_lock, ms)
            return True
        return False

    async def record_served(self, request_id: str) -> None:
        """A queued request got its outcome: one more observation of the queue's service rate."""
        now = self._clock()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.served, {request_id: now})
            pipe.zremrangebyscore(self.keys.served, "-inf", now - self._served_window)
            await pipe.execute()

    async def queue_signature(self) -> QueueSignature:
        """A few values that change whenever some queued request's position or wait estimate may have.

        The queue's length, its first and last members, the arrival counter and the last service. New
        requests join at the back (the counter moves); a request put back after a failed dispatch takes
        its old place, ahead of everyone queued, so it becomes the first; any other way out of the queue
        shortens it. So equal signatures mean every member kept its place, except when changes cancelled
        out exactly, which leaves every place as it was too. One transaction: a consistent snapshot.
        """
        queue, seq = self._admission.keys.queue, self._admission.keys.seq
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zcard(queue)
            pipe.zrange(queue, 0, 0)
            pipe.zrange(queue, -1, -1)
            pipe.get(seq)
            pipe.zrange(self.keys.served, -1, -1)
            length, first, last, arrivals, served = await pipe.execute()

        def one(members: list[Any]) -> str | None:
            return _text(members[0]) if members else None

        return QueueSignature(length=int(length), first=one(first), last=one(last),
                              arrivals=None if arrivals is None else _text(arrivals), last_served=one(served))

    async def arrived_at(self, request_id: str) -> float | None:
        """When a queued request arrived (its entry's stamp), for the wait estimate; None when it is gone,
        has no stamp or its entry is damaged."""
        try:
            return QueueEntry.queued_at_of(await self._admission.entry_data(request_id))
        except ValueError:
            return None

    async def served_times(self) -> list[float]:
        """Times at which queued requests were served within the window, oldest first."""
        now = self._clock()
        rows = await self._redis.zrangebyscore(self.keys.served, now - self._served_window, "+inf", withscores=True)
        return [float(score) for _, score in rows]
