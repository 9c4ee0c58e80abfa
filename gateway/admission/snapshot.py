"""A consistent picture of the whole deployment for an operator: the queue's front, the requests being
dispatched, the live sessions and the controls, read in one atomic call (``lua/snapshot.lua``).

Bounded: at most ``limit`` items of each list, so a snapshot of a queue of 100,000 costs what one of 50 does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from gateway.admission.control import Controls, controls_from
from gateway.admission.keys import AdmissionKeys
from gateway.model import jsonutil
from gateway.model.entry import QueueEntry
from gateway.redis.client import run_script

#: Most items of each list a snapshot may be asked for.
MAX_SNAPSHOT_LIMIT = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitingItem:
    """A request in the queue (``position`` >= 1), or being dispatched (``position`` 0)."""

    request_id: str
    position: int
    campaign: str
    region: str
    age_seconds: float | None
    registered: bool
    dispatching: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionItem:
    """A live session: its conversation id, campaign and age (from its lease, ``None`` if unknown)."""

    conversation_id: str
    campaign: str
    age_seconds: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentSnapshot:
    """What the store holds at ``time`` (wall clock): counts, the controls and the first items of each list."""

    time: float
    queued: int
    active: int
    pending: int
    controls: Controls
    entries: tuple[WaitingItem, ...]
    sessions: tuple[SessionItem, ...]


@cache
def _source() -> str:
    return (resources.files("gateway.admission") / "lua" / "snapshot.lua").read_text(encoding="utf-8")


def _rows(value: Any) -> list[Any]:
    # cjson writes an empty Lua table as {}: an empty list here.
    return value if isinstance(value, list) else []


def _entry_fields(raw: str) -> tuple[str, float | None]:
    """The region and arrival time of an entry's stored data; blanks when it cannot be read."""
    try:
        data = jsonutil.loads(raw) if raw else None
    except ValueError:
        data = None
    request = data.get("request") if isinstance(data, dict) else None
    region = request.get("regionId") if isinstance(request, dict) else None
    return (region if isinstance(region, str) else ""), QueueEntry.queued_at_of(data)


class SnapshotReader:
    """Reads :class:`DeploymentSnapshot`.

    :param redis: the shared store's client.
    :param keys: the admission store's key names.
    :param registered_key: the presence store's hash of registered requests.
    :param session_lease_seconds: ``Concurrency.SessionLeaseSeconds`` (a session's age is its lease's length
        less the time left on it).
    :param clock: wall clock in seconds, the clock the store's times are on.
    """

    def __init__(self, redis: aioredis.Redis, *, keys: AdmissionKeys, registered_key: str,
                 session_lease_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._script = redis.register_script(_source())
        self._redis = redis
        self._keys = [keys.queue, keys.entries, keys.entry_campaign, keys.entry_lease, keys.active, keys.active_meta,
                      keys.pending, keys.control, registered_key]
        self._lease = session_lease_seconds
        self._clock = clock

    async def read(self, limit: int) -> DeploymentSnapshot:
        """The snapshot with at most ``limit`` items in each list.

        :raises ValueError: ``limit`` is not in ``0..MAX_SNAPSHOT_LIMIT``.
        :raises RedisError: the store did not answer.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_SNAPSHOT_LIMIT:
            raise ValueError(f"limit must be an int from 0 to {MAX_SNAPSHOT_LIMIT}")
        reply = jsonutil.loads(await run_script(self._redis, self._script, self._keys, (limit,)))
        now = self._clock()
        entries = [self._waiting(row, now, position=0, dispatching=True) for row in _rows(reply["dispatching"])]
        entries += [self._waiting(row, now, position=i + 1, dispatching=False)
                    for i, row in enumerate(_rows(reply["waiting"]))]
        sessions = tuple(SessionItem(conversation_id=conv, campaign=campaign,
                                     age_seconds=max(0.0, now - (float(expiry) - self._lease)))
                         for conv, campaign, expiry in _rows(reply["sessions"]))
        return DeploymentSnapshot(time=now, queued=int(reply["queued"]), active=int(reply["active"]),
                                  pending=int(reply["pending"]),
                                  controls=controls_from("1" if reply["paused"] else None, reply["cap"]),
                                  entries=tuple(entries), sessions=sessions)

    @staticmethod
    def _waiting(row: list[Any], now: float, *, position: int, dispatching: bool) -> WaitingItem:
        request_id, campaign, raw = row[0], row[1], row[2]
        region, queued_at = _entry_fields(raw)
        return WaitingItem(request_id=request_id, position=position, campaign=campaign, region=region,
                           age_seconds=None if queued_at is None else max(0.0, now - queued_at),
                           registered=bool(row[3]) if len(row) > 3 else True, dispatching=dispatching)
