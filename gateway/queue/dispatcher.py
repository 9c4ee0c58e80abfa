"""Serves the queue: whenever capacity frees, claim the oldest eligible entries and get them sessions.

Capacity frees when a session-ended webhook arrives, when a lease is reclaimed, or when the cap grows.
Anything that frees capacity calls :meth:`QueueDispatcher.kick`; a timer also wakes the loop every
``interval`` seconds so that expired leases are reclaimed (and entries of a dead process retried) even
without traffic. Claims are atomic in Redis, so any number of gateway processes can run a dispatcher
against one store without serving an entry twice; each claim carries a token made here, so a claim
whose reply is lost is settled (its entries served) as soon as the store answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

from redis.exceptions import RedisError

from gateway.background import Periodic, TaskSet
from gateway.admission.types import RequestState
from gateway.admission.store import AdmissionStore, ClaimedEntry, Renewal, StoreReset, new_claim_token
from gateway.queue.capacity import CapacityPolicy
from gateway.queue.serving import SessionServing
from gateway.model.entry import QueueEntry
from gateway.queue.events import (
    DispatchAttempted,
    DispatchFailed,
    EventHub,
    QueueChanged,
    SessionFailed,
    SessionReady,
    StoreFailed,
)
from gateway.platform.errors import FailureKind, PlatformError
from gateway.platform.wire import InitiatedSession
from gateway.config.settings import Settings

log = logging.getLogger("gateway.queue.dispatcher")

#: What a queued client is told when its session could not be created (the original's exact text).
SESSION_FAILED_MESSAGE = "An error occurred while creating your session. Please try again."

T = TypeVar("T")
#: Lost claims remembered for settling at once (each settles in one store call when Redis answers).
MAX_UNSETTLED = 64


#: Pause before the second call for an entry whose first failed harmlessly; it doubles for each next one.
RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 5.0


def next_backoff(current: float, *, first: float = 1.0, ceiling: float = 30.0) -> float:
    """The pause after another platform concurrency refusal: doubling, capped."""
    return first if current <= 0 else min(ceiling, current * 2)


def retry_delay(failed_calls: int) -> float:
    """The pause after ``failed_calls`` platform calls for one entry failed without creating a session."""
    return min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2 ** (failed_calls - 1))


class _Ending(StrEnum):
    """How a dispatch without a session ends."""

    FAIL = "fail"  # the client gets SessionFailed, the slot and the limits go back
    STOP = "stop"  # someone else accounts for the entry now (requeued, left, held by another dispatcher)


#: Events for the metrics (immutable, so one instance serves every dispatch).
_CALL_SUCCEEDED = DispatchAttempted(result="success")
_STORE_FAILED = StoreFailed(component="dispatcher")
#: The kind a dispatch that failed in the gateway itself (a damaged entry, a bug) is counted under.
GATEWAY_FAILURE = "gateway"

_WHY_NOT_AGAIN = {
    FailureKind.AMBIGUOUS: "; not repeated, the platform may have created a session",
    FailureKind.PERMANENT: "; a retry cannot succeed",
}


class QueueDispatcher:
    """Claims queued entries into slots and asks the platform for their sessions."""

    def __init__(
        self,
        *,
        store: AdmissionStore,
        serving: SessionServing,
        settings: Settings,
        capacity: CapacityPolicy,
        events: EventHub,
        interval: float = 1.0,
        batch: int = 32,
        monotonic: Callable[[], float] = time.monotonic,
        on_store_reset: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._serving = serving
        self._settings = settings
        self._capacity = capacity
        self._events = events
        self._batch = batch
        self._monotonic = monotonic
        self._loop = Periodic(lambda: self._counted_round(), interval=interval, name="queue dispatch", log=log)
        self._on_store_reset = on_store_reset
        self._inflight = TaskSet("dispatch", log=log)
        self._backoff = 0.0
        self._paused_until = 0.0
        #: Tokens of claims (this dispatcher's, or admissions') whose replies were lost, with the most
        #: entries each may hold; settled before the next claim. Bounded: beyond it, leases expire instead.
        self._unsettled: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let dispatches already under way finish (their sessions exist or will)."""
        await self._loop.stop()
        await self._inflight.wait(timeout)

    @property
    def running(self) -> bool:
        """Whether the claim loop runs (a failed round must never end it)."""
        return self._loop.running

    def kick(self) -> None:
        """Capacity may have freed: claim now rather than at the next tick."""
        self._loop.kick()

    async def wait_idle(self) -> None:
        """Wait until no dispatch is under way (for tests and orderly shutdowns)."""
        while not await self._inflight.wait():
            pass

    def dispatch_claimed(self, entries: tuple[ClaimedEntry, ...] | list[ClaimedEntry]) -> None:
        """Serve entries that another call (an admission) already claimed."""
        for entry in entries:
            self._inflight.spawn(self._dispatch(entry), label=entry.request_id)

    # -- the loop ----------------------------------------------------------------------------------

    def settle_later(self, token: str, *, limit: int) -> None:
        """A call that claims under ``token`` (an admission) lost its reply: settle it at the next round,
        serving what it claimed and giving back what it took for its own request (see ``claim.lua``)."""
        if len(self._unsettled) >= MAX_UNSETTLED:
            log.warning("not settling claim %s: %d lost claims already wait for the store; its leases expire "
                        "instead", token, len(self._unsettled))
            return
        self._unsettled[token] = limit
        self._loop.kick()

    async def _counted_round(self) -> None:
        try:
            await self._claim_round()
        except RedisError:
            self._events.publish(_STORE_FAILED)
            raise  # the loop logs it and goes on at the next tick

    async def _claim_round(self) -> None:
        for token, limit in list(self._unsettled.items()):
            await self._settle(token, limit)
        if self._monotonic() < self._paused_until:
            # Backing off after the platform said it is full: still reclaim expired leases.
            await self._store.reap()
            return
        token = new_claim_token()
        try:
            entries = await self._store.claim(
                caps=self._capacity.caps(),
                pending_lease_seconds=self._settings.concurrency.pending_lease_seconds,
                limit=self._batch,
                token=token,
            )
        except StoreReset:
            # Refused before doing anything: nothing to settle. Once the reset is handled (the capacity
            # takes the platform's usage as it now stands), the next round claims under the new epoch.
            if self._on_store_reset is not None:
                await self._on_store_reset()
            self._loop.kick()
            return
        except Exception:
            # Redis may have run the claim and only its reply be lost (a stall past the command timeout):
            # the entries it took would wait for their leases to expire twice. The next round settles the
            # token first, and serves them as soon as the store answers.
            self._unsettled[token] = self._batch
            raise
        self._serve_claimed(entries)

    async def _settle(self, token: str, limit: int) -> None:
        """Serve what an earlier claim with ``token`` took, its reply having been lost (see ``claim.lua``)."""
        entries = await self._store.settle_claim(
            token, pending_lease_seconds=self._settings.concurrency.pending_lease_seconds, limit=limit)
        del self._unsettled[token]
        if entries:
            log.warning("serving %d queued request(s) claimed by a call whose reply was lost: %s",
                        len(entries), ", ".join(entry.request_id for entry in entries))
        self._serve_claimed(entries)

    def _serve_claimed(self, entries: list[ClaimedEntry]) -> None:
        if entries:
            self.dispatch_claimed(entries)
            self._events.publish(QueueChanged(reason="dispatched"))
            if len(entries) == self._batch:
                self._loop.kick()  # more may be eligible; go round again at once

    # -- one dispatch ------------------------------------------------------------------------------
    #
    # How a failed platform call ends (PlatformError.kind):
    # * PLATFORM_FULL: the entry goes back to the front of the queue and claims pause (a back-off).
    # * RETRYABLE (certainly no session: nothing sent, or a 5xx): called again after a back-off, up to
    #   Concurrency.MaxDispatchAttempts calls in all. The slot stays held meanwhile, its pending lease
    #   renewed before each call, so the lease covers every call and the entry keeps its turn; it holds
    #   the slot no longer than its calls and pauses take (a few seconds while the platform answers).
    #   A client that left meanwhile is not called for: the renewal finds its entry gone.
    # * AMBIGUOUS (sent, no usable answer: the platform may have created a session) and PERMANENT (4xx,
    #   a refusal, a request we cannot send): the entry fails at once. Not retrying an ambiguous call is
    #   what keeps any client from getting two platform sessions.
    # Any other exception before a session exists is our own failure (a damaged entry, a bug), which
    # would recur each time the entry reached the front: the entry fails at once too.

    async def _dispatch(self, entry: ClaimedEntry) -> None:
        kind = GATEWAY_FAILURE
        try:
            result = await self._call_platform(entry)
        except RedisError as exc:
            # Only the store calls between platform calls raise this, and no session exists: the lease
            # expires and the reaper puts the entry back at the front, to be tried again. (Counted where
            # it was raised, in _retry_store.)
            log.warning("dispatch of request %s stopped, store unavailable (%s); it is retried after its lease "
                        "expires", entry.request_id, exc)
            return
        except Exception:
            log.exception("dispatch of queued request %s failed in the gateway; it fails now rather than take "
                          "a slot again each time it reaches the front", entry.request_id)
            result = _Ending.FAIL
        if isinstance(result, FailureKind):
            kind, result = result.value, _Ending.FAIL
        if result is _Ending.FAIL:
            self._events.publish(DispatchFailed(kind=kind))
            await self._fail_or_leave_to_lease(entry)
        elif result is not _Ending.STOP:
            await self._record(entry, result)

    async def _call_platform(self, entry: ClaimedEntry) -> InitiatedSession | _Ending | FailureKind:
        """The session, or how the dispatch ends without one: STOP, or the kind of the failure that fails it."""
        attempts = self._settings.concurrency.max_dispatch_attempts
        attempt = 1
        while True:
            try:
                session = await self._serving.initiate(entry)
            except PlatformError as exc:
                kind = exc.kind
                self._events.publish(DispatchAttempted(result=kind.value))
                if kind is FailureKind.PLATFORM_FULL:
                    await self._requeue(entry)
                    return _Ending.STOP
                if kind is not FailureKind.RETRYABLE or attempt >= attempts:
                    log.warning("platform call for queued request %s failed (%s, call %d of at most %d%s): %s",
                                entry.request_id, kind, attempt, attempts, _WHY_NOT_AGAIN.get(kind, ""), exc)
                    return kind
                delay = retry_delay(attempt)
                log.info("platform call for queued request %s failed (%s, call %d of at most %d); again in %.1f s",
                         entry.request_id, exc, attempt, attempts, delay)
            else:
                self._events.publish(_CALL_SUCCEEDED)
                return session
            await asyncio.sleep(delay)
            if not await self._still_ours(entry):
                return _Ending.STOP
            attempt += 1

    async def _still_ours(self, entry: ClaimedEntry) -> bool:
        """Renew the entry's pending lease for the next call; False when the entry is no longer ours."""
        renewal = await self._retry_store(lambda: self._store.extend_lease(
            entry, pending_lease_seconds=self._settings.concurrency.pending_lease_seconds))
        if renewal is Renewal.RENEWED:
            return True
        if renewal is Renewal.LEFT:
            # The client left between two calls: no session came of it, so its unit (kept for the session
            # it might have got) goes back now, and the freed slot serves the next client.
            log.info("request %s left while its session was being retried; not calling the platform again",
                     entry.request_id)
            await self._serving.give_back_unit(entry.request_id, entry.data)
            await self._announce_departure(entry)
            self.kick()
        else:
            log.warning("request %s lost its lease between two platform calls; its next holder serves it",
                        entry.request_id)
        return False

    async def _requeue(self, entry: ClaimedEntry) -> None:
        position = await self._retry_store(lambda: self._serving.requeue(entry))
        if position < 0:
            # The client left while this dispatch was under way and no session came of it (its unit went
            # back with the requeue): its other windows hear why.
            await self._announce_departure(entry)
        self._backoff = next_backoff(self._backoff)
        self._paused_until = self._monotonic() + self._backoff
        log.info("platform at its concurrency limit; request %s back at position %s, pausing %.0f s",
                 entry.request_id, position, self._backoff)
        self._events.publish(QueueChanged(reason="requeued"))

    async def _announce_departure(self, entry: ClaimedEntry) -> None:
        """A request that left while being dispatched ended without a session: its other open connections
        (another window) hear why, in the words its departure recorded."""
        try:
            status = await self._store.status(entry.request_id)
        except RedisError as exc:
            log.warning("could not read why request %s left: %s", entry.request_id, exc)
            return
        if status is not None and status.status is RequestState.FAILED and status.message:
            self._events.publish(SessionFailed(request_id=entry.request_id, message=status.message))

    async def _record(self, entry: ClaimedEntry, session: InitiatedSession) -> None:
        """The platform session exists: record it and tell the client."""
        self._backoff = 0.0
        session_lease = self._settings.concurrency.session_lease_seconds
        try:
            await self._retry_store(lambda: self._serving.activate(entry, session, queued=True),
                                    patience=session_lease)
            await self._retry_store(lambda: self._store.set_outcome(
                entry.request_id, status=RequestState.READY, web_socket_url=session.web_socket_url,
                ttl_seconds=self._settings.queue.ready_ttl_seconds,
            ), patience=session_lease)
        except Exception:
            # The store stayed down for longer than the session lease (the recording is retried that
            # long): the reaper puts the entry back and the client gets a second session later. Logged.
            log.exception("could not record session %s of queued request %s; the request will be served again",
                          session.conversation_session_id, entry.request_id)
            return
        log.info("queued request %s is ready (conversation %s)", entry.request_id, session.conversation_session_id)
        self._events.publish(SessionReady(request_id=entry.request_id, web_socket_url=session.web_socket_url,
                                          queued_at=QueueEntry.queued_at_of(entry.data)))

    async def _fail_or_leave_to_lease(self, entry: ClaimedEntry) -> None:
        try:
            await self._fail(entry)
        except RedisError as exc:
            log.warning("could not record the failure of request %s (store unavailable: %s); it is tried again "
                        "after its lease expires", entry.request_id, exc)

    async def _fail(self, entry: ClaimedEntry) -> None:
        await self._retry_store(lambda: self._store.release_lease(entry.lease_id))
        await self._retry_store(lambda: self._store.set_outcome(
            entry.request_id, status=RequestState.FAILED, message=SESSION_FAILED_MESSAGE,
            ttl_seconds=self._settings.queue.ready_ttl_seconds,
        ))
        # The client never got a session: it may try again without this request counting.
        await self._serving.refund(entry.request_id, entry.data)
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
                self._events.publish(_STORE_FAILED)
                if self._monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
