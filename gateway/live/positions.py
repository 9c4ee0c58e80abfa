"""Live queue positions: who moved, when to tell them, and how long they will probably wait.

The pure parts are :class:`PositionTracker` (which local clients have a new position),
:func:`next_round_delay` (coalescing: at most one round per ``min_interval`` seconds, hence at most
one update per client per second), :func:`~gateway.live.estimates.estimate_wait_seconds` (from the observed rate at which
queued requests are served) and, in :mod:`gateway.live.position_message`, the encoded update.
:class:`PositionBroadcaster` runs them; its I/O is injected as callables.

Multi-process design: each process computes positions only for the hub connections it hosts and sends
to them directly, without the backplane. One round costs one ZRANGE of the queue, whatever the number
of processes' clients, and no position is ever computed or sent twice for one client. A round runs
when this process hears of a change (its own ``QueueChanged`` events) and, while it hosts waiting
clients, at least every ``poll_interval`` seconds, which picks up changes made by other processes.
With a ``queue_signature`` (a few bytes that change whenever anyone's position may have: see
:meth:`gateway.live.presence.PresenceStore.queue_signature`) the poll looks every ``change_poll``
seconds whether the queue changed, and reads the queue only when it did (or ``poll_interval`` passed):
another process's release reaches this process's clients within a fraction of a second, and an idle
queue of 20,000 costs a tiny read instead of a ZRANGE of 20,000 ids a second.

Latency design: a round is background work. After one release at the front every waiting client's
position changes, so a round at 5,000 clients is 5,000 socket writes (a few hundred milliseconds of
CPU on a loaded machine), while a ``SessionReady`` is a chain of a few dozen short loop turns (webhook,
Redis scripts, the platform call, the write) through this process, Redis and the platform. So a round

* sends in time slices of about a millisecond, then yields to the event loop;
* pauses for a slice when the loop turn it yielded to was busy, so such a chain runs ahead;
* holds while a dispatch is under way (:meth:`PositionBroadcaster.hold`, up to ``hold_seconds``),
  so the platform call and the Redis writes that follow it find the loop free;
* is paced: at most one update per ``pace`` seconds on average (up to ``round_budget`` in all), which
  leaves CPU to the other processes on that chain instead of saturating a core for the whole burst;
* stops pausing after ``round_budget`` seconds, so every client still hears within about a second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway.background import Periodic
from gateway.live.estimates import service_gap, wait_for_gap

if TYPE_CHECKING:
    from gateway.live.presence import QueueSignature

log = logging.getLogger("gateway.live.positions")

#: A round slower than this is logged: clients then learn their positions late.
SLOW_ROUND_SECONDS = 1.0

#: After a failed poll or round, the poll waits this long before it tries the store again (an outage
#: must not turn five polls a second into five failing store calls a second).
RETRY_SECONDS = 1.0


def next_round_delay(*, last_round_at: float | None, now: float, min_interval: float) -> float:
    """Seconds to wait before the next round may run (0 = now)."""
    if last_round_at is None:
        return 0.0
    return max(0.0, last_round_at + min_interval - now)


class PositionTracker:
    """Remembers the last position each local request was told, so only changes are sent, and which of
    them have not been told an estimate yet, so they are sent one as soon as it is known."""

    def __init__(self) -> None:
        self._told: dict[str, int] = {}
        self._unestimated: set[str] = set()

    def told(self, request_id: str, position: int) -> int | None:
        """The client learnt ``position`` from its Register result (no estimate); returns the one told before."""
        previous = self._told.get(request_id)
        self._told[request_id] = position
        self._unestimated.add(request_id)
        return previous

    def estimate_told(self, request_id: str, known: bool) -> None:
        """An update went out, with an estimate (``known``) or with none."""
        if known:
            self._unestimated.discard(request_id)
        else:
            self._unestimated.add(request_id)

    @property
    def awaiting_estimate(self) -> bool:
        """Whether some local request still waits for its first estimate."""
        return bool(self._unestimated)

    def forget(self, request_id: str) -> None:
        self._told.pop(request_id, None)
        self._unestimated.discard(request_id)

    def changes(self, queue_ids: Sequence[str], local_ids: Iterable[str],
                vanished: list[str] | None = None) -> list[tuple[str, int]]:
        """``(request id, new position)`` for every local request whose position differs from what it was
        last told. Local requests no longer in the queue are forgotten (they get SessionReady/Failed), and
        appended to ``vanished`` when given."""
        index = {rid: i for i, rid in enumerate(queue_ids, 1)}
        told = self._told
        out = []
        for rid in local_ids:
            position = index.get(rid)
            if position is None:
                told.pop(rid, None)
                self._unestimated.discard(rid)
                if vanished is not None:
                    vanished.append(rid)
                continue
            if told.get(rid) != position:
                told[rid] = position
                out.append((rid, position))
        return out

    def unestimated(self, changes: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """``(request id, position)`` of the requests still without an estimate whose position did not
        change (those that did are in ``changes`` already): to be sent again now that one is known."""
        changed = {rid for rid, _ in changes}
        return [(rid, self._told[rid]) for rid in self._unestimated if rid not in changed and rid in self._told]


class PositionBroadcaster:
    """Runs coalesced position rounds for the waiting clients of this process.

    :param queue_ids: reads the queue, front first (``AdmissionStore.queue_ids``).
    :param served_times: reads the service log (``PresenceStore.served_times``).
    :param local_requests: the request ids registered by connections of this process.
    :param send: delivers one update ``(request id, position, estimated wait or None)`` to the local
        connections of a request; must not block.
    :param clock: wall clock for the estimate; :param monotonic: for coalescing and time slices.
    :param min_interval: least seconds between two rounds.
    :param poll_interval: most seconds between rounds while there are local waiting clients.
    :param slice_seconds: most seconds of sending between two yields to the event loop.
    :param pace: least average seconds per update (a round of ``n`` updates lasts at least
        ``min(n * pace, round_budget)`` seconds); 0 sends as fast as the CPU allows.
    :param round_budget: seconds after which a round stops pausing for other work.
    :param hold_seconds: longest pause for one :meth:`hold`.
    :param on_estimate_error: told, for each local request served, the wait it really had minus the first
        estimate it was sent (see :meth:`retire`); None: estimates are not followed.
    :param on_store_error: told when a round could not read the store.
    :param arrived_at: when a queued request arrived (``None`` if unknown), for the front of the queue.
    """

    def __init__(self, *, queue_ids: Callable[[], Awaitable[list[str]]],
                 served_times: Callable[[], Awaitable[list[float]]],
                 local_requests: Callable[[], Iterable[str]],
                 send: Callable[[str, int, int | None], None],
                 clock: Callable[[], float], monotonic: Callable[[], float],
                 min_interval: float = 1.0, poll_interval: float = 1.0,
                 slice_seconds: float = 0.0005, pace: float = 0.0001, round_budget: float = 0.5,
                 hold_seconds: float = 0.1, on_estimate_error: Callable[[float], None] | None = None,
                 on_store_error: Callable[[], None] | None = None,
                 arrived_at: Callable[[str], Awaitable[float | None]] | None = None,
                 queue_signature: Callable[[], Awaitable[QueueSignature]] | None = None,
                 change_poll: float = 0.2) -> None:
        self.tracker = PositionTracker()
        self._queue_signature = queue_signature
        #: The signature read before the last full round, and whether a local change wants a round.
        self._signature: QueueSignature | None = None
        self._dirty = True
        self._last_full: float | None = None
        self._retry_at = 0.0
        self._arrived_at = arrived_at
        self._on_estimate_error = on_estimate_error
        self._on_store_error = on_store_error
        #: The first estimate each local request was sent, and when: request id -> (told at, seconds).
        self._promises: dict[str, tuple[float, int]] = {}
        self._queue_ids = queue_ids
        self._served_times = served_times
        self._local_requests = local_requests
        self._send = send
        self._clock = clock
        self._monotonic = monotonic
        self._min_interval = min_interval
        self._poll_interval = poll_interval
        self._slice = slice_seconds
        self._pace = pace
        self._round_budget = round_budget
        self._hold_seconds = hold_seconds
        self._held_until = 0.0
        self._last_round: float | None = None
        self._loop = Periodic(self._paced_round, interval=poll_interval if queue_signature is None else change_poll,
                              name="queue positions", log=log)
        # Requests whose outcome was delivered since the current round started.
        self._retired: set[str] = set()
        # How far the last round's sends fell behind its schedule (a CPU-starved round).
        self._behind = 0.0
        self.rounds = 0

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Let a round under way finish (cancelling a Redis call mid-flight can stall the client), then stop."""
        await self._loop.stop(grace=5)

    def changed(self) -> None:
        """The queue changed: run a round as soon as coalescing allows."""
        self._dirty = True
        self._loop.kick()

    def hold(self) -> None:
        """A dispatch started (its outcome is on the way): a round under way pauses until :meth:`unhold`
        or for ``hold_seconds``, whichever comes first."""
        self._held_until = self._monotonic() + self._hold_seconds

    def unhold(self) -> None:
        """The outcome went out: a paused round may go on."""
        self._held_until = 0.0

    def retire(self, request_id: str, *, served: bool = False) -> None:
        """``request_id`` was told its outcome: a round under way, whose snapshot of the queue may
        predate that, must not send it a position after its ``SessionReady``/``SessionFailed``.

        :param served: the outcome is its session: the wait it was promised is settled now, unless a round
            already saw it leave the queue (which settles it then: the outcome may have been published by
            another process, and only this one knows what it promised).
        """
        if served:
            self._settle(request_id, self._clock())
        self.forget(request_id)
        self._retired.add(request_id)

    def forget(self, request_id: str) -> None:
        """No connection of this process waits for ``request_id`` any more."""
        self.tracker.forget(request_id)
        self._promises.pop(request_id, None)

    def _settle(self, request_id: str, now: float) -> None:
        promise = self._promises.pop(request_id, None)
        if promise is not None and self._on_estimate_error is not None:
            told_at, estimate = promise
            self._on_estimate_error(now - told_at - estimate)

    async def _paced_round(self) -> None:
        """One round, no sooner than ``min_interval`` after the last one that told someone something."""
        if not any(True for _ in self._local_requests()):
            return  # nobody of this process waits: nothing to tell
        try:
            if not await self._round_due():
                return
        except RedisError as exc:
            self._failed(exc)
            return
        delay = next_round_delay(last_round_at=self._last_round, now=self._monotonic(),
                                 min_interval=self._min_interval)
        if delay > 0:
            await asyncio.sleep(delay)
        round_at = self._monotonic()
        try:
            if self._queue_signature is not None:
                # Read before the queue: a change after this read shows in the next poll's signature.
                self._dirty = False
                self._signature = await self._queue_signature()
                self._last_full = round_at
            if await self.run_once():
                # Only a round that told someone something counts for coalescing: a quiet poll must not
                # hold back the next real change. Client i is due at the same offset in every round, so
                # starting the next round as much later as this one ran behind keeps each client's
                # updates at least ``min_interval`` apart.
                self._last_round = round_at + self._behind
        except RedisError as exc:  # a Redis outage: the next round catches up
            self._failed(exc)

    def _failed(self, exc: RedisError) -> None:
        # Whatever the failed call was to find out, the next attempt reads the queue in full.
        self._dirty = True
        self._retry_at = self._monotonic() + RETRY_SECONDS
        if self._on_store_error is not None:
            self._on_store_error()
        log.warning("position round failed: %s", exc)

    async def _round_due(self) -> bool:
        """Whether the queue may have changed since the last round (always, without a signature)."""
        # (A request still without an estimate needs none of its own: the rate changes only with a
        # service, which changes the signature.)
        if self._queue_signature is None:
            return True
        if self._monotonic() < self._retry_at:
            return False  # the store failed a moment ago: a local change or the backstop waits too
        if self._dirty:
            return True
        if self._last_full is None or self._monotonic() - self._last_full >= self._poll_interval:
            return True
        return await self._queue_signature() != self._signature

    async def run_once(self) -> int:
        """One round; returns how many clients were sent a new position."""
        self._retired.clear()
        local = list(self._local_requests())
        if not local:
            return 0
        started = self._monotonic()
        queue = await self._queue_ids()
        vanished: list[str] = []
        changes = self.tracker.changes(queue, local, vanished)
        if vanished and self._promises:
            # Left the queue since the last round: served (by whichever process), as far as this one knows.
            now = self._clock()
            for rid in vanished:
                self._settle(rid, now)
        if not changes and not self.tracker.awaiting_estimate:
            return 0
        served = await self._served_times()
        front_since = await self._arrived_at(queue[0]) if queue and self._arrived_at is not None else None
        now = self._clock()
        gap = service_gap(served, now=now, waiting_since=front_since)
        if gap is not None:
            # A client told its place without an estimate (at Register, or before the rate was known) hears
            # one now, though its place did not move: otherwise it could wait at the front with none.
            changes += self.tracker.unestimated(changes)
        if not changes:
            return 0
        sent = await self._deliver(changes, gap, started, now)
        self.rounds += 1
        elapsed = self._monotonic() - started
        if elapsed > SLOW_ROUND_SECONDS:
            log.warning("position round took %.0f ms for %d update(s) (queue of %d)", 1000 * elapsed,
                        sent, len(queue))
        return sent

    async def _deliver(self, changes: list[tuple[str, int]], gap: float | None, started: float,
                       told_at: float) -> int:
        monotonic, send, retired, tracker = self._monotonic, self._send, self._retired, self.tracker
        # The first estimate each request is sent is remembered, to be compared with its real wait.
        promises = self._promises if self._on_estimate_error is not None and gap is not None else None
        slice_end = monotonic() + self._slice
        # The schedule: update i is due no earlier than ``started + i * step``.
        step = min(self._pace, self._round_budget / len(changes))
        sent = 0
        behind = 0.0
        for i, (rid, position) in enumerate(changes, 1):
            if rid in retired:
                continue
            sent += 1
            wait = wait_for_gap(position, gap)
            tracker.estimate_told(rid, wait is not None)
            if promises is not None and wait is not None and rid not in promises:
                promises[rid] = (told_at, wait)
            try:
                send(rid, position, wait)
            except Exception:  # one client's failure never stops the others' updates
                log.exception("position update for %s failed", rid)
            now = monotonic()
            behind = max(behind, now - started - i * step)
            if now >= slice_end:
                await self._give_way(started, started + i * step)
                slice_end = monotonic() + self._slice
        self._behind = behind
        return sent

    async def _give_way(self, started: float, due: float) -> None:
        before = self._monotonic()
        await asyncio.sleep(0)
        now = self._monotonic()
        if now - started >= self._round_budget:
            return
        pause = due - now  # ahead of the schedule
        # A loop turn that took a good part of a slice ran other work (an HTTP request, a Redis reply
        # on the way to a SessionReady): pause, so that work's next steps do not each wait a slice.
        if now - before > self._slice / 2:
            pause = max(pause, self._slice)
        if pause > 0:
            await asyncio.sleep(pause)
            now = self._monotonic()
        while now < self._held_until and now - started < self._round_budget:
            await asyncio.sleep(min(self._held_until - now, self._slice))
            now = self._monotonic()
