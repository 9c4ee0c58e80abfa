"""The abandonment decision: which queued requests nobody is waiting for any more.

An entry leaves the queue when no hub connection registered it within ``register_timeout`` seconds of
its being first seen in the queue, or when all its hub connections have been gone for
``disconnect_grace`` seconds (longer than the official client's reconnect delays, 0/2/10/30 s, so a
client that reconnects and registers again keeps its place). The decision is the pure function
:func:`gateway.live.presence.absent` (it lives with the presence records it reads);
:class:`AbandonmentReaper` runs it on a timer against the presence store and frees what a removed entry
held through ``SessionService.leave``.

"First seen" is recorded by the reaper's scan when it first notices a new queue member: new members
have queue scores above a cursor the scan keeps, so noticing them costs O(new members), not O(queue).
The register timeout is therefore measured from at most one reaper interval after the 202 (two seconds
by default, well inside a 60 s timeout); the hub cannot record it itself because admission happens
outside it, in whichever process took the POST. Presence is indexed by first-seen and last-seen time,
so a round reads only the entries that are due: thousands of live clients cost Redis a few O(log N)
commands a round (see :mod:`gateway.live.presence`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from gateway.background import Periodic
from gateway.live.outages import StoreOutages, observe
from gateway.live.presence import Absence, PresenceStore, absent

log = logging.getLogger("gateway.live.abandonment")

T = TypeVar("T")


class AbandonmentReaper:
    """Runs :func:`gateway.live.presence.absent` every ``interval`` seconds in the process holding the reaper lease.

    :param presence: the shared presence store.
    :param leave: ``SessionService.leave`` (removes the entry, frees what it held, announces the change).
    :param clock: wall clock in seconds (the presence store's).
    :param register_timeout: ``Queue.RegisterTimeoutSeconds``.
    :param disconnect_grace: ``Queue.DisconnectGraceSeconds``.
    :param interval: seconds between rounds.
    :param outages: when this process could not reach the store (shared with the hub's heartbeat); that
        time is added to both deadlines, so nobody is dropped for the store's silence.
    :param on_recovery: awaited when a round's first answer ends an outage, before anything is judged:
        the hub touches its local registrations, whose heartbeats could not land meanwhile.
    :param on_store_error: told when a store call of a round failed (the round then ends; the next retries).
    """

    def __init__(self, *, presence: PresenceStore, leave: Callable[..., Awaitable[bool]],
                 clock: Callable[[], float], register_timeout: float, disconnect_grace: float,
                 interval: float = 2.0, outages: StoreOutages | None = None,
                 on_recovery: Callable[[], Awaitable[None]] | None = None,
                 on_store_error: Callable[[], None] | None = None) -> None:
        self._on_store_error = on_store_error
        self._outages = outages if outages is not None else StoreOutages()
        self._on_recovery = on_recovery
        self._presence = presence
        self._leave = leave
        self._clock = clock
        self._register_timeout = register_timeout
        self._grace = disconnect_grace
        self._interval = interval
        self._loop = Periodic(lambda: self.run_once(), interval=interval, name="abandonment reaper", log=log)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Let a round under way finish (cancelling a Redis call mid-flight can stall the client), then stop."""
        await self._loop.stop(grace=5)

    async def run_once(self) -> list[tuple[str, Absence]]:
        """One round: returns the requests removed and why (empty if another process leads)."""
        led = await self._observed(self._presence.try_lead(self._interval * 3))
        if not led:
            return []
        # Time the store could not be reached is nobody's absence: each deadline is extended by the
        # outage time inside it (the scripts re-check with the same extended limits).
        now = self._clock()
        timeout = self._register_timeout + self._outages.excused(now, self._register_timeout)
        grace = self._grace + self._outages.excused(now, self._grace)
        records = await self._observed(self._presence.scan(register_timeout=timeout, disconnect_grace=grace))
        candidates = absent(records, now=now, register_timeout=timeout, disconnect_grace=grace)
        removed = []
        for request_id, _ in candidates:
            absence = await self._observed(
                self._presence.abandon(request_id, register_timeout=timeout, disconnect_grace=grace))
            if absence is None:
                continue  # a client came back between the snapshot and now
            if await self._leave(request_id, reason=f"abandoned ({absence})"):
                removed.append((request_id, absence))
        return removed

    async def _observed(self, call: Awaitable[T]) -> T:
        try:
            result, recovered = await observe(self._outages, self._clock, call)
        except RedisError:
            if self._on_store_error is not None:
                self._on_store_error()
            raise
        if recovered and self._on_recovery is not None:
            # The store answers again: the local heartbeats that could not land go first.
            await self._on_recovery()
        return result
