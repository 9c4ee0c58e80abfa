"""How many sessions the gateway may hold at once: a configured cap, or one learned from the platform.

With ``Concurrency.MaxConcurrentSessions`` set, that is the global cap. Without it (an existing deployment's
file), the cap comes from the platform's billing endpoints, as the original middleware did, but counting
only the usage that is *not ours* against the platform limit: the platform's usage includes our own active
sessions, which the admission store already counts.

Unlike the original, an unknown platform limit does not queue everyone (its defect 2). Until the first
successful sync, or when the billing endpoints are unavailable (a self-hosted platform has none), the
gateway admits optimistically and lets the platform's own concurrency error send clients to the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway.admission.store import AdmissionStore, Caps
from gateway.background import Periodic
from gateway.platform.errors import PlatformError

if TYPE_CHECKING:
    from gateway.platform.client import PlatformClient

log = logging.getLogger("gateway.queue.capacity")

#: The cap used while the platform's limit is unknown: effectively "ask the platform".
UNKNOWN_PLATFORM_CAP = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformUsage:
    """One billing-endpoint reading: account-wide live calls and the account's limit."""

    current: int
    limit: int


def cap_from_platform(usage: PlatformUsage, ours: int) -> int:
    """The global cap left for this gateway, given the platform's reading and our own live sessions.

    :param usage: the platform's account-wide usage and limit.
    :param ours: sessions this gateway holds now (they are part of ``usage.current``).
    """
    others = max(0, usage.current - ours)
    return max(0, usage.limit - others)


class CapacityPolicy:
    """Holds the current caps; the platform sync loop updates the global one."""

    def __init__(self, *, global_cap: int | None, campaign_caps: Mapping[str, int]) -> None:
        self._configured = global_cap
        self._learned: int | None = None
        self._campaign_caps = dict(campaign_caps)

    @property
    def syncs_from_platform(self) -> bool:
        return self._configured is None

    def caps(self) -> Caps:
        if self._configured is not None:
            cap = self._configured
        elif self._learned is not None:
            cap = self._learned
        else:
            cap = UNKNOWN_PLATFORM_CAP
        return Caps(global_cap=cap, campaign_caps=self._campaign_caps)

    def learn(self, usage: PlatformUsage | None, ours: int) -> bool:
        """Record a platform reading (``None`` = the sync failed). Returns True when the cap grew."""
        before = self.caps().global_cap
        if usage is None:
            self._learned = None
        else:
            self._learned = cap_from_platform(usage, ours)
        return self.caps().global_cap > before

    def assume_reset(self) -> None:
        """The store was reset: its count of our sessions restarts at zero while those sessions still run,
        and no earlier reading knows how many there are. Until the next reading nothing is admitted (the
        queue waits a platform round trip), so the forgotten sessions are not admitted again on top of
        themselves; the reading then counts every call the platform reports, ours included."""
        if self._configured is None:
            self._learned = 0


class CapSource(StrEnum):
    """Where the effective global cap comes from (the ``source`` label)."""

    CONFIG = "config"  # Concurrency.MaxConcurrentSessions
    PLATFORM = "platform"  # the platform's Call_Concurrency limit, less the usage that is not ours
    OVERRIDE = "override"  # an operator's runtime override (the admin API), when one is set


@dataclass(frozen=True, slots=True)
class CapReading:
    """The effective global cap (``None`` while the platform's limit is not known yet) and its source."""

    sessions: int | None
    source: CapSource


def capacity_reading(capacity: CapacityPolicy, override: int | None = None) -> CapReading:
    """The cap the deployment admits against now, and where it comes from.

    :param override: the operators' cap (:class:`gateway.admission.control.Controls`), which the scripts
        apply instead of the process's own when it is set.
    """
    if override is not None:
        return CapReading(override, CapSource.OVERRIDE)
    cap = capacity.caps().global_cap
    if not capacity.syncs_from_platform:
        return CapReading(cap, CapSource.CONFIG)
    return CapReading(None if cap == UNKNOWN_PLATFORM_CAP else cap, CapSource.PLATFORM)


class PlatformCapacitySync:
    """Reads the platform's billing endpoints every ``interval`` seconds into :class:`CapacityPolicy`.

    :param platform: the platform client.
    :param store: the admission store (our own live sessions, which the platform's usage includes).
    :param capacity: the policy to update.
    :param interval: ``Concurrency.SyncIntervalSeconds``.
    :param grew: called when the cap grew (the dispatcher claims at once).
    :param on_store_error: told when the store could not be read (counted as a Redis error).
    """

    def __init__(self, *, platform: PlatformClient, store: AdmissionStore, capacity: CapacityPolicy,
                 interval: float, grew: Callable[[], None], on_store_error: Callable[[], None] = lambda: None) -> None:
        self._on_store_error = on_store_error
        self._platform = platform
        self._store = store
        self._capacity = capacity
        self._grew = grew
        self._loop = Periodic(lambda: self.sync_once(), interval=interval, name="platform capacity sync", log=log,
                              first_at_once=True)
        self._failures = 0

    def start(self) -> None:
        if self._capacity.syncs_from_platform:
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def sync_now(self) -> None:
        """Read the platform again without waiting for the next interval."""
        self._loop.kick()

    async def after_store_reset(self) -> None:
        """Reset handler: count all platform usage as others' at once, then read the platform again."""
        if self._capacity.syncs_from_platform:
            self._capacity.assume_reset()
            self.sync_now()

    async def sync_once(self) -> None:
        usage: PlatformUsage | None
        try:
            reading = await self._platform.concurrency()
            usage = PlatformUsage(current=reading.current, limit=reading.limit)
            self._failures = 0
        except PlatformError as exc:
            usage = None
            self._failures += 1
            if self._failures == 1:  # log once per outage, not every 15 s
                log.warning("platform concurrency sync failed (%s); admitting optimistically until it works", exc)
        try:
            counts = await self._store.counts()
        except RedisError as exc:
            self._on_store_error()
            log.warning("platform concurrency sync could not read the store: %s", exc)
            return
        if self._capacity.learn(usage, int(counts.get("active", 0)) + int(counts.get("pending", 0))):
            self._grew()
