"""Serves the queue: whenever capacity frees, claim the oldest eligible entries and get them sessions.

Capacity frees when a session-ended webhook arrives, when a lease is reclaimed, or when the cap grows.
Anything that frees capacity calls :meth:`QueueDispatcher.kick`; a timer also wakes the loop every
``interval`` seconds so that expired leases are reclaimed (and entries of a dead process retried) even
without traffic. Claims are atomic in Redis, so any number of gateway processes can run a dispatcher
against one store without serving an entry twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from gateway.admission import AdmissionStore, ClaimedEntry, UnitBinding
from gateway.capacity import CapacityPolicy, PlatformUsage
from gateway.events import EventHub, QueueChanged, SessionFailed, SessionReady
from gateway.payload import SessionRequest
from gateway.platform import PlatformClient, PlatformError
from gateway.protection import ClientProtection, ProtectionUnavailable, subject_of
from gateway.settings import Settings

log = logging.getLogger("gateway.dispatcher")

#: What a queued client is told when its session could not be created (the original's exact text).
SESSION_FAILED_MESSAGE = "An error occurred while creating your session. Please try again."

T = TypeVar("T")


def next_backoff(current: float, *, first: float = 1.0, ceiling: float = 30.0) -> float:
    """The pause after another platform concurrency refusal: doubling, capped."""
    return first if current <= 0 else min(ceiling, current * 2)


class QueueDispatcher:
    """Claims queued entries into slots and asks the platform for their sessions."""

    def __init__(
        self,
        *,
        store: AdmissionStore,
        platform: PlatformClient,
        settings: Settings,
        capacity: CapacityPolicy,
        events: EventHub,
        interval: float = 1.0,
        batch: int = 32,
        monotonic: Callable[[], float] = time.monotonic,
        protection: ClientProtection | None = None,
    ) -> None:
        self._protection = protection
        self._store = store
        self._platform = platform
        self._settings = settings
        self._capacity = capacity
        self._events = events
        self._interval = interval
        self._batch = batch
        self._monotonic = monotonic
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._backoff = 0.0
        self._paused_until = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="queue-dispatcher")
        if self._capacity.syncs_from_platform:
            self._sync_task = asyncio.create_task(self._sync_platform(), name="platform-capacity-sync")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let dispatches already under way finish (their sessions exist or will)."""
        for task in (self._loop_task, self._sync_task):
            if task is not None:
                task.cancel()
        for task in (self._loop_task, self._sync_task):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=timeout)

    def kick(self) -> None:
        """Capacity may have freed: claim now rather than at the next tick."""
        self._wake.set()

    def dispatch_claimed(self, entries: tuple[ClaimedEntry, ...] | list[ClaimedEntry]) -> None:
        """Serve entries that another call (an admission) already claimed."""
        for entry in entries:
            task = asyncio.create_task(self._dispatch(entry), name=f"dispatch-{entry.request_id}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    # -- the loop ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._claim_round()
            except asyncio.CancelledError:
                raise
            except RedisError as exc:
                log.warning("queue dispatch paused: store unavailable (%s)", exc)
            except Exception:
                log.exception("queue dispatch round failed")

    async def _claim_round(self) -> None:
        if self._monotonic() < self._paused_until:
            # Backing off after the platform said it is full: still reclaim expired leases.
            await self._store.reap()
            return
        entries = await self._store.claim(
            caps=self._capacity.caps(),
            pending_lease_seconds=self._settings.concurrency.pending_lease_seconds,
            limit=self._batch,
        )
        if entries:
            self.dispatch_claimed(entries)
            self._events.publish(QueueChanged(reason="dispatched"))
            if len(entries) == self._batch:
                self._wake.set()  # more may be eligible; go round again at once

    async def _dispatch(self, entry: ClaimedEntry) -> None:
        try:
            await self._serve(entry)
        except Exception:
            # The pending lease expires by itself and the reaper puts the entry back at the front (after
            # one more lease duration), so the client is served later. A platform session that already
            # existed is lost only if the store stayed down for longer than the session lease (the
            # recording is retried that long); then the client gets a second one, and we log it.
            log.exception("dispatch of request %s failed; it will be retried after its lease expires", entry.request_id)

    async def _serve(self, entry: ClaimedEntry) -> None:
        campaign = self._settings.platform.campaigns.get(entry.campaign)
        if campaign is None:
            log.error("queued request %s names campaign %r, which is no longer configured", entry.request_id, entry.campaign)
            await self._fail(entry)
            return
        request = SessionRequest.from_dict(entry.data["request"])
        try:
            session = await self._platform.initiate(campaign, request, entry.data["ip"])
        except PlatformError as exc:
            if exc.is_concurrency_limit:
                position = await self._retry_store(lambda: self._store.requeue_front(entry))
                if position < 0 and self._protection is not None:
                    # The client left while this dispatch was under way and no session came of it: its
                    # concurrency unit, kept for the session it might have got, goes back now.
                    try:
                        await self._protection.left(entry.request_id, subject_of(entry.data))
                    except ProtectionUnavailable as exc:
                        log.warning("could not give back the rate-limit unit of %s now: %s", entry.request_id, exc)
                self._backoff = next_backoff(self._backoff)
                self._paused_until = self._monotonic() + self._backoff
                log.info("platform at its concurrency limit; request %s back at position %s, pausing %.0f s",
                         entry.request_id, position, self._backoff)
                self._events.publish(QueueChanged(reason="requeued"))
                return
            log.warning("platform refused queued request %s: %s", entry.request_id, exc)
            await self._fail(entry)
            return
        self._backoff = 0.0
        # The unit's arguments carry the time: built for each attempt, so a retried activation still
        # makes the unit expire with the session lease.
        session_lease = self._settings.concurrency.session_lease_seconds
        await self._retry_store(lambda: self._store.activate(
            lease_id=entry.lease_id,
            conversation_session_id=session.conversation_session_id,
            request_id=entry.request_id,
            session_lease_seconds=session_lease,
            units=self._activation_units(entry, session.conversation_session_id),
        ), patience=session_lease)
        await self._retry_store(lambda: self._store.set_outcome(
            entry.request_id, status="ready", web_socket_url=session.web_socket_url,
            ttl_seconds=self._settings.queue.ready_ttl_seconds,
        ), patience=session_lease)
        log.info("queued request %s is ready (conversation %s)", entry.request_id, session.conversation_session_id)
        self._events.publish(SessionReady(request_id=entry.request_id, web_socket_url=session.web_socket_url))

    def _activation_units(self, entry: ClaimedEntry, conversation_session_id: str) -> UnitBinding | None:
        if self._protection is None:
            return None
        return self._protection.activation_units(entry.request_id, subject_of(entry.data), conversation_session_id)

    async def _fail(self, entry: ClaimedEntry) -> None:
        await self._retry_store(lambda: self._store.release_lease(entry.lease_id))
        await self._retry_store(lambda: self._store.set_outcome(
            entry.request_id, status="failed", message=SESSION_FAILED_MESSAGE,
            ttl_seconds=self._settings.queue.ready_ttl_seconds,
        ))
        if self._protection is not None:
            try:
                # The client never got a session: it may try again without this request counting.
                await self._protection.refund(entry.request_id, subject_of(entry.data))
            except ProtectionUnavailable as exc:
                log.warning("could not refund the rate limits of %s: %s", entry.request_id, exc)
        self._events.publish(SessionFailed(request_id=entry.request_id, message=SESSION_FAILED_MESSAGE))
        self.kick()  # the slot is free again

    async def _retry_store(self, op: Callable[[], Awaitable[T]], *, patience: float | None = None) -> T:
        """Run a store write, retrying through an outage.

        These writes record facts that already happened at the platform (a session exists, a call
        failed); giving up at the first connection error would leak a slot or strand a client. We retry
        for about as long as the pending lease lives (after which the reaper takes over), or for
        ``patience`` seconds: a session that exists is worth recording for as long as its lease, and the
        reaper holds the entry for one more lease duration once the store answers again, so the
        recording lands before anyone dispatches the entry a second time.
        """
        deadline = self._monotonic() + (patience or self._settings.concurrency.pending_lease_seconds)
        delay = 0.1
        while True:
            try:
                return await op()
            except RedisError:
                if self._monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- platform capacity sync --------------------------------------------------------------------

    async def _sync_platform(self) -> None:
        interval = self._settings.concurrency.sync_interval_seconds
        failures = 0
        while True:
            usage: PlatformUsage | None
            try:
                reading = await self._platform.concurrency()
                usage = PlatformUsage(current=reading.current, limit=reading.limit)
                failures = 0
            except PlatformError as exc:
                usage = None
                failures += 1
                if failures == 1:  # log once per outage, not every 15 s
                    log.warning("platform concurrency sync failed (%s); admitting optimistically until it works", exc)
            try:
                counts = await self._store.counts()
                ours = int(counts.get("active", 0)) + int(counts.get("pending", 0))
                if self._capacity.learn(usage, ours):
                    self.kick()
            except RedisError as exc:
                log.warning("platform concurrency sync could not read the store: %s", exc)
            await asyncio.sleep(interval)
