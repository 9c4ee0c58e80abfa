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
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.admission import Caps

log = logging.getLogger("gateway.capacity")

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
