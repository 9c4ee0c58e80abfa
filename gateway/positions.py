"""Live queue positions: who moved, when to tell them, and how long they will probably wait.

The pure parts are :class:`PositionTracker` (which local clients have a new position),
:func:`next_round_delay` (coalescing: at most one round per ``min_interval`` seconds, hence at most
one update per client per second) and :func:`estimate_wait_seconds` (from the observed rate at which
queued requests are served). :class:`PositionBroadcaster` runs them; its I/O is injected as callables.

Multi-process design: each process computes positions only for the hub connections it hosts and sends
to them directly, without the backplane. One round costs one ZRANGE of the queue, whatever the number
of processes' clients, and no position is ever computed or sent twice for one client. A round runs
when this process hears of a change (its own ``QueueChanged`` events) and, while it hosts waiting
clients, at least every ``poll_interval`` seconds, which picks up changes made by other processes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

log = logging.getLogger("gateway.positions")

#: A round slower than this is logged: clients then learn their positions late.
SLOW_ROUND_SECONDS = 0.5


def next_round_delay(*, last_round_at: float | None, now: float, min_interval: float) -> float:
    """Seconds to wait before the next round may run (0 = now)."""
    if last_round_at is None:
        return 0.0
    return max(0.0, last_round_at + min_interval - now)


def estimate_wait_seconds(position: int, served_times: Sequence[float], *, now: float) -> int | None:
    """Expected seconds until ``position`` is served, or ``None`` while the rate is unknown.

    The mean gap between observed services gives the rate; when nothing has been served for longer
    than that gap, the time since the last service is used instead, so a stalled queue's estimate
    grows rather than promising a rate it no longer has.

    :param position: 1-based queue position.
    :param served_times: times at which queued requests were served, oldest first.
    :param now: the current time, same clock.
    """
    if position < 1 or len(served_times) < 2:
        return None
    span = served_times[-1] - served_times[0]
    if span <= 0:
        return None
    gap = max(span / (len(served_times) - 1), now - served_times[-1])
    return max(1, math.ceil(position * gap))


class PositionTracker:
    """Remembers the last position each local request was told, so only changes are sent."""

    def __init__(self) -> None:
        self._told: dict[str, int] = {}

    def told(self, request_id: str, position: int) -> None:
        """The client learnt ``position`` another way (the Register result)."""
        self._told[request_id] = position

    def forget(self, request_id: str) -> None:
        self._told.pop(request_id, None)

    def changes(self, queue_ids: Sequence[str], local_ids: Iterable[str]) -> list[tuple[str, int]]:
        """``(request id, new position)`` for every local request whose position differs from what it was
        last told. Local requests no longer in the queue are forgotten (they get SessionReady/Failed)."""
        index = {rid: i + 1 for i, rid in enumerate(queue_ids)}
        out = []
        for rid in local_ids:
            position = index.get(rid)
            if position is None:
                self._told.pop(rid, None)
                continue
            if self._told.get(rid) != position:
                self._told[rid] = position
                out.append((rid, position))
        return out


def update_payload(position: int, served_times: Sequence[float], now: float) -> dict[str, int | None]:
    """The ``QueuePositionUpdated`` argument."""
    return {"queuePosition": position, "estimatedWaitSeconds": estimate_wait_seconds(position, served_times, now=now)}


class PositionBroadcaster:
    """Runs coalesced position rounds for the waiting clients of this process.

    :param queue_ids: reads the queue, front first (``AdmissionStore.queue_ids``).
    :param served_times: reads the service log (``PresenceStore.served_times``).
    :param local_requests: the request ids registered by connections of this process.
    :param send: delivers one update to the local connections of a request (must not block).
    :param clock: wall clock for the estimate; :param monotonic: for coalescing.
    :param min_interval: least seconds between two rounds.
    :param poll_interval: most seconds between rounds while there are local waiting clients.
    :param chunk: updates sent between two yields to the event loop.
    """

    def __init__(self, *, queue_ids: Callable[[], Awaitable[list[str]]],
                 served_times: Callable[[], Awaitable[list[float]]],
                 local_requests: Callable[[], Iterable[str]],
                 send: Callable[[str, Mapping[str, int | None]], None],
                 clock: Callable[[], float], monotonic: Callable[[], float],
                 min_interval: float = 1.0, poll_interval: float = 1.0, chunk: int = 100) -> None:
        self.tracker = PositionTracker()
        self._queue_ids = queue_ids
        self._served_times = served_times
        self._local_requests = local_requests
        self._send = send
        self._clock = clock
        self._monotonic = monotonic
        self._min_interval = min_interval
        self._poll_interval = poll_interval
        self._chunk = chunk
        self._wake = asyncio.Event()
        self._last_round: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.rounds = 0

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="queue-positions")

    async def stop(self) -> None:
        """Let a round under way finish (cancelling a Redis call mid-flight can stall the client), then stop."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, 5)
            except (asyncio.CancelledError, TimeoutError):
                pass
            self._task = None

    def changed(self) -> None:
        """The queue changed: run a round as soon as coalescing allows."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            except TimeoutError:
                if not any(True for _ in self._local_requests()):
                    continue
            delay = next_round_delay(last_round_at=self._last_round, now=self._monotonic(),
                                     min_interval=self._min_interval)
            if delay > 0:
                await asyncio.sleep(delay)
            self._wake.clear()
            if self._stopping:
                return
            round_at = self._monotonic()
            try:
                if await self.run_once():
                    # Only a round that told someone something counts for coalescing: a quiet poll
                    # must not hold back the next real change.
                    self._last_round = round_at
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a Redis outage: the next round catches up
                log.warning("position round failed: %s", exc)

    async def run_once(self) -> int:
        """One round; returns how many clients were sent a new position."""
        local = list(self._local_requests())
        if not local:
            return 0
        started = self._monotonic()
        queue = await self._queue_ids()
        changes = self.tracker.changes(queue, local)
        if not changes:
            return 0
        served = await self._served_times()
        now = self._clock()
        for i, (rid, position) in enumerate(changes, 1):
            try:
                self._send(rid, update_payload(position, served, now))
            except Exception:  # one client's failure never stops the others' updates
                log.exception("position update for %s failed", rid)
            if i % self._chunk == 0:
                # Each send wakes a connection's writer; yielding between chunks lets a SessionReady
                # (a few loop turns from webhook to socket) pass a burst of thousands of updates.
                await asyncio.sleep(0)
        self.rounds += 1
        elapsed = self._monotonic() - started
        if elapsed > SLOW_ROUND_SECONDS:
            log.warning("position round took %.0f ms for %d update(s) (queue of %d)", 1000 * elapsed,
                        len(changes), len(queue))
        return len(changes)
