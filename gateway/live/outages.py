"""When this process could not reach the store: time that must not count against waiting clients.

A queued client proves it is still there through its hub connection, whose process touches its presence
in Redis every few seconds. While Redis is unreachable (down, restarting, or frozen) those touches cannot
land, so without care the abandonment reaper would read the silence as the client's: after an outage
longer than the disconnect grace, every connected client would be dropped. :class:`StoreOutages` records
the intervals during which the store did not answer, as seen by the calls of this process, so the reaper
can leave them out of every deadline.

An interval runs from when an unanswered call was sent to when a call was next answered. A call that was
answered, but only after ``slow_after`` seconds, counts as an outage of its own length: a frozen Redis that
comes back before the command timeout fails no call, yet no touch landed meanwhile either. Overlapping
intervals (concurrent calls) merge. :class:`StoreOutages` does no I/O and reads no clock (times are passed
in); :func:`observe` wraps one awaited call with it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

#: An answer slower than this (seconds) means the store was not serving meanwhile.
SLOW_AFTER_SECONDS = 1.0
#: Intervals that ended longer ago than this are forgotten (no deadline looks back further).
HORIZON_SECONDS = 24 * 3600.0
#: At most this many intervals are kept; the two oldest merge beyond it (longer, so still safe).
MAX_INTERVALS = 64

T = TypeVar("T")


class StoreOutages:
    """The recent intervals during which the store did not answer this process.

    :param slow_after: seconds after which an answered call counts as an outage of its own length.
    :param horizon: seconds after which a finished interval is forgotten.
    :param max_intervals: most intervals kept (memory bound).
    """

    def __init__(self, *, slow_after: float = SLOW_AFTER_SECONDS, horizon: float = HORIZON_SECONDS,
                 max_intervals: int = MAX_INTERVALS) -> None:
        if max_intervals < 2:
            raise ValueError("max_intervals must be at least 2")
        self._slow_after = slow_after
        self._horizon = horizon
        self._max = max_intervals
        self._intervals: deque[tuple[float, float]] = deque()
        #: When the current outage began (the earliest unanswered call), or None while the store answers.
        self._failing_since: float | None = None

    @property
    def failing(self) -> bool:
        """True from a failed call until the next answered one."""
        return self._failing_since is not None

    def failed(self, sent_at: float) -> None:
        """A call sent at ``sent_at`` got no answer (error or timeout)."""
        if self._failing_since is None or sent_at < self._failing_since:
            self._failing_since = sent_at

    def succeeded(self, sent_at: float, answered_at: float) -> bool:
        """A call sent at ``sent_at`` was answered at ``answered_at``.

        :return: True when this answer ends an outage (the caller may then catch up on what it missed).
        """
        recovered = self._failing_since is not None
        if recovered:
            start = min(self._failing_since, sent_at)  # type: ignore[type-var]
            self._failing_since = None
            self._add(start, answered_at)
        elif answered_at - sent_at > self._slow_after:
            self._add(sent_at, answered_at)
            recovered = True
        self._forget_before(answered_at - self._horizon)
        return recovered

    def overlap(self, since: float, until: float) -> float:
        """Seconds of outage within ``[since, until]``, an outage still under way included."""
        total = 0.0
        for start, end in self._intervals:
            total += max(0.0, min(end, until) - max(start, since))
        if self._failing_since is not None:
            total += max(0.0, until - max(self._failing_since, since))
        return total

    def excused(self, now: float, window: float) -> float:
        """Outage seconds to add to a deadline of ``window`` seconds that ends ``now``.

        The window is widened by the outage time found in it, and looked at once more, so an outage at
        the far edge of the widened window counts too (two passes are enough for any realistic pattern;
        more would only widen it further, which errs on the client's side).
        """
        extra = self.overlap(now - window, now)
        if extra:
            extra = self.overlap(now - window - extra, now)
        return extra

    def _add(self, start: float, end: float) -> None:
        if end <= start:
            return
        kept: list[tuple[float, float]] = []
        for other in self._intervals:
            if other[1] < start or other[0] > end:
                kept.append(other)
            else:  # overlapping: merge into the new one
                start, end = min(start, other[0]), max(end, other[1])
        kept.append((start, end))
        kept.sort()
        while len(kept) > self._max:
            (a, _), (_, d) = kept[0], kept[1]
            kept[0:2] = [(a, d)]
        self._intervals = deque(kept)

    def _forget_before(self, cutoff: float) -> None:
        while self._intervals and self._intervals[0][1] < cutoff:
            self._intervals.popleft()


async def observe(outages: StoreOutages, clock: Callable[[], float], call: Awaitable[T]) -> tuple[T, bool]:
    """Await a store call and record its fate in ``outages``.

    :return: the call's result, and whether its answer ended an outage.
    :raises RedisError: as the call did (recorded as unanswered first).
    """
    sent_at = clock()
    try:
        result = await call
    except RedisError:
        outages.failed(sent_at)
        raise
    return result, outages.succeeded(sent_at, clock())
