"""The session-request use case, free of HTTP: admit now, queue, or refuse.

Handlers translate the results and errors here into status codes; this module never sees a request
object. The order of checks follows the original middleware (campaign, region, client IP, IP security,
rate limits, concurrency), with the defects it lists fixed: one atomic decision in Redis, no leaked slot
on any failure path, and the platform's own concurrency refusal sending the client to the queue.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.admission.store import (
    AdmissionStore,
    AdmitResult,
    ClaimedEntry,
    EndResult,
    Outcome,
    Removed,
    RequestState,
    RequestStatus,
    StoreReset,
    new_claim_token,
)
from gateway.background import TaskSet
from gateway.queue.answers import (
    INITIATE_FAILED_MESSAGE,
    QUEUE_FULL_MESSAGE,
    STORE_DOWN_MESSAGE,
    Admitted,
    PlatformUnavailable,
    Queued,
    QueueFull,
    QueuingReplyLost,
    Refused,
    ServiceUnavailable,
)
from gateway.queue.capacity import CapacityPolicy
from gateway.queue.dispatcher import QueueDispatcher
from gateway.model.departures import Departure, departure_message
from gateway.queue.events import EventHub, QueueChanged, SessionFailed
from gateway.model.request import SessionRequest
from gateway.model.entry import QueueEntry
from gateway.platform.errors import FailureKind, PlatformError
from gateway.queue.protection import ClientProtection, ProtectionUnavailable, Subject
from gateway.queue.serving import SessionServing
from gateway.config.settings import Settings
from ratelimit import UnitCall

log = logging.getLogger("gateway.queue.service")

#: Published for every request that joins the queue (events are immutable, so one instance serves all).
_JOINED = QueueChanged(reason="joined")
_WITHDRAWN = QueueChanged(reason="withdrawn")
#: Take-backs allowed to wait for a hung store at once (each may hold a pool connection for two timeouts).
MAX_BACKGROUND_TAKE_BACKS = 32


def new_request_id() -> str:
    """A random (version 4) UUID in its canonical text form.

    What ``str(uuid.uuid4())`` returns, for a third of its cost: ``uuid.UUID`` validates and converts
    its input several times, and a request id is made for every session request.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class SessionService:
    """Admission, status and release of voice sessions."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: AdmissionStore,
        serving: SessionServing,
        capacity: CapacityPolicy,
        dispatcher: QueueDispatcher,
        events: EventHub,
        protection: ClientProtection,
        on_store_reset: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._on_store_reset = on_store_reset
        self._protection = protection
        self._settings = settings
        self._store = store
        self._serving = serving
        self._capacity = capacity
        self._dispatcher = dispatcher
        self._events = events
        # Each may hold a pool connection for two timeouts: bounded, so a long outage cannot queue them up
        # ahead of new requests (the register timeout removes a left-behind entry; its hits expire).
        self._take_backs = TaskSet("take-back", log=log, limit=MAX_BACKGROUND_TAKE_BACKS)

    async def request_session(self, request: SessionRequest, *, client_ip: str) -> Admitted | Queued:
        """Admit ``request`` now (platform session created) or queue it.

        :raises ServiceUnavailable: the store is down (503).
        :raises QueueFull: the queue is at ``Queue.MaxLength`` (503).
        :raises PlatformUnavailable: the platform failed (502); the slot was given back.
        :raises Refused: IP security (403) or a rate limit (429) said no.
        """
        refusal = self._protection.check_ip(client_ip)
        if refusal is not None:
            raise Refused(refusal)
        request_id = new_request_id()
        subject = Subject(client_identifier=request.client_identifier, ip=client_ip)
        limits = self._protection.limit_call(request_id, subject)
        try:
            return await self._admit(request, request_id, subject, client_ip, limits)
        except (Refused, QueueFull):
            raise  # the admission call consumed nothing
        except BaseException as exc:
            # The request never happened (platform failure, store lost after the decision, shutdown): the
            # client may try again without it counting. Giving back a unit that was never added is harmless.
            if isinstance(exc, QueuingReplyLost):
                # The call may have queued the request: an entry that would wait, and be served, for a
                # client told it failed. After a timeout this runs behind the answer, which would otherwise
                # wait for another timeout or two.
                take_back = self._take_back(request_id, subject if limits is not None else None, exc.lease_id)
                if isinstance(exc.__cause__, RedisTimeoutError):
                    self._in_background(take_back, request_id)
                else:
                    await take_back
            elif limits is not None:
                await self._refund_quietly(request_id, subject)
            raise

    async def _admit(self, request: SessionRequest, request_id: str, subject: Subject, client_ip: str,
                     limits: UnitCall | None) -> Admitted | Queued:
        entry = QueueEntry(request=request, ip=client_ip)
        result = await self._decide(request_id, entry, limits)
        if result.claimed:
            # Older queued entries that were eligible go first; this call claimed them for us.
            self._dispatcher.dispatch_claimed(result.claimed)
        limit_headers = self._limit_headers(result, request_id, subject, limits)
        if result.outcome is Outcome.FULL:
            raise QueueFull(QUEUE_FULL_MESSAGE, retry_after=30)
        if result.outcome is Outcome.QUEUED:
            assert result.position is not None
            self._events.publish(_JOINED)
            return Queued(request_id=request_id, position=result.position, headers=limit_headers)
        assert result.lease_id is not None
        claimed = ClaimedEntry(request_id=request_id, campaign=request.campaign_id, lease_id=result.lease_id,
                               data=entry.to_data())
        return await self._serve_now(claimed, limit_headers)

    async def _decide(self, request_id: str, entry: QueueEntry, limits: UnitCall | None) -> AdmitResult:
        """The admission call: admitted, queued, full or limited, in one round trip."""
        token = new_claim_token()
        try:
            try:
                return await self._admit_call(entry, request_id, limits, token)
            except StoreReset:
                # The store was reset since this process last looked, and the call did nothing. Catch up
                # (the cap stops counting the sessions the store forgot as free), then decide once more.
                if self._on_store_reset is None:
                    raise
                await self._on_store_reset()
                token = new_claim_token()
                return await self._admit_call(entry, request_id, limits, token)
        except StoreReset as exc:
            log.warning("admission refused twice for a changed store epoch: %s", exc)
            raise ServiceUnavailable(STORE_DOWN_MESSAGE, retry_after=5) from exc
        except RedisError as exc:
            log.warning("admission failed, store unavailable: %s", exc)
            # The call may have run, its reply lost: the queued entries it claimed would wait for their
            # leases to expire twice, and a slot it took for this request would stay held. The dispatcher
            # settles the call's token as soon as the store answers (and fences it, should it run later).
            self._dispatcher.settle_later(token, limit=self._store.scan_limit)
            raise QueuingReplyLost(STORE_DOWN_MESSAGE, retry_after=5) from exc

    def _limit_headers(self, result: AdmitResult, request_id: str, subject: Subject,
                       limits: UnitCall | None) -> dict[str, str]:
        """The RateLimit headers of the decision; raises Refused when a limit said no."""
        if limits is None:
            return {}
        try:
            refusal, headers = self._protection.verdict(
                limited=result.outcome is Outcome.LIMITED, values=result.limit_values, subject=subject)
        except ProtectionUnavailable as exc:
            log.error("unreadable rate-limit report for %s: %s", request_id, exc)
            if result.outcome is Outcome.LIMITED:
                raise ServiceUnavailable(STORE_DOWN_MESSAGE, retry_after=5) from exc
            # The decision stands (the request is queued or holds a slot, and its limits were
            # consumed): answer it, only without the RateLimit headers.
            return {}
        if refusal is not None:
            raise Refused(refusal)
        return headers

    async def _serve_now(self, claimed: ClaimedEntry, headers: dict[str, str]) -> Admitted | Queued:
        """The request got a slot at once: its session now (the serving path it shares with the dispatcher)."""
        try:
            session = await self._serving.initiate(claimed)
        except PlatformError as exc:
            if exc.kind is FailureKind.PLATFORM_FULL:
                # The platform is fuller than we knew (other traffic on the account): wait in line.
                return await self._queue_after_refusal(claimed, exc, headers)
            log.warning("platform refused request %s: %s", claimed.request_id, exc)
            await self._serving.release(claimed.lease_id)
            raise PlatformUnavailable(INITIATE_FAILED_MESSAGE) from exc
        except BaseException:
            await self._serving.release(claimed.lease_id)
            raise
        try:
            await self._serving.activate(claimed, session, queued=False)
        except RedisError as exc:
            # The platform session exists, so the client gets it. The pending lease expires by itself,
            # and so does the rate-limit unit (after its queued hold); until then the gateway
            # undercounts the slot by one, which the log makes visible.
            log.error("could not record session %s (store unavailable: %s); serving it anyway",
                      session.conversation_session_id, exc)
        return Admitted(web_socket_url=session.web_socket_url,
                        conversation_session_id=session.conversation_session_id, headers=headers)

    async def _queue_after_refusal(self, claimed: ClaimedEntry, refusal: PlatformError,
                                   headers: dict[str, str]) -> Queued:
        try:
            position = await self._serving.requeue(claimed)
        except RedisError as store_exc:
            raise QueuingReplyLost(STORE_DOWN_MESSAGE, retry_after=5, lease_id=claimed.lease_id) from store_exc
        if position <= 0:
            # Not queued after all (the store found it already settled): nothing to wait for.
            log.warning("platform full and request %s could not be queued", claimed.request_id)
            raise PlatformUnavailable(INITIATE_FAILED_MESSAGE) from refusal
        log.info("platform at its concurrency limit; request %s queued at %d", claimed.request_id, position)
        self._events.publish(_JOINED)
        return Queued(request_id=claimed.request_id, position=position, headers=headers)

    async def _admit_call(self, entry: QueueEntry, request_id: str, limits: UnitCall | None,
                          token: str) -> AdmitResult:
        return await self._store.admit(
            token=token,
            request_id=request_id,
            campaign=entry.request.campaign_id,
            data=entry.to_data(),
            caps=self._capacity.caps(),
            pending_lease_seconds=self._settings.concurrency.pending_lease_seconds,
            max_queue_length=self._settings.queue.max_length,
            limits=limits,
        )

    async def status(self, request_id: str) -> RequestStatus | None:
        return await self._store_or_unavailable(self._store.status(request_id))

    async def end_session(self, conversation_session_id: str) -> EndResult:
        """The platform says a conversation ended: free its slot and serve the next client at once."""
        result = await self._store_or_unavailable(self._store.end_session(conversation_session_id))
        if result is EndResult.RELEASED:
            self._dispatcher.kick()
        if result is not EndResult.UNKNOWN:
            try:
                await self._protection.session_ended(conversation_session_id)
            except ProtectionUnavailable as exc:
                # The unit expires with the session lease anyway; the slot is already free.
                log.warning("could not give back the rate-limit unit of %s now: %s", conversation_session_id, exc)
        return result

    async def leave(self, request_id: str, *, reason: Departure | str = Departure.LEFT) -> bool:
        """Take a waiting request out of the queue (the client left, or abandoned it); the places behind
        it move up, and its open hub connections hear why (``SessionFailed``; the status says the same).
        Returns False when it was not waiting (already served, failed or unknown)."""
        departure = Departure(reason)
        message = self._departure_message(departure)
        data = await self._store_or_unavailable(self._store.entry_data(request_id))
        removed = await self._store_or_unavailable(self._store.remove(request_id, message=message))
        if removed is Removed.WAITING and data is not None:
            await self._serving.give_back_unit(request_id, data)
        # A request being dispatched keeps its unit: its platform call is in flight, and the session it may
        # get counts until its webhook (the activation re-arms the unit; a failure refunds it).
        if removed:
            log.info("request %s left the queue (%s%s)", request_id, departure,
                     "; its session was already being created" if removed is Removed.DISPATCHING else "")
            self._announce_departure(request_id, removed, message)
            self._events.publish(QueueChanged(reason=str(departure)))
        return bool(removed)

    async def lost_in_reset(self, request_ids: list[str]) -> list[str]:
        """After a store reset: of ``request_ids`` (requests whose clients are still connected), those the
        store no longer knows get "failed" with the reason, recorded in the new store so the status says
        it too, and ``SessionFailed`` to their connections. Returns them."""
        message = self._departure_message(Departure.STORE_RESET)
        lost = []
        for request_id in request_ids:
            try:
                if await self._store.status(request_id) is not None:
                    continue  # still known: its place survived (or it was re-admitted since)
                await self._store.set_outcome(request_id, status=RequestState.FAILED, message=message,
                                              ttl_seconds=self._settings.queue.ready_ttl_seconds)
            except RedisError as exc:
                log.warning("could not check request %s after the store reset: %s", request_id, exc)
                continue
            lost.append(request_id)
            self._events.publish(SessionFailed(request_id=request_id, message=message))
        if lost:
            log.warning("told %d waiting client(s) of this process that the store reset lost their requests",
                        len(lost))
            self._events.publish(QueueChanged(reason=str(Departure.STORE_RESET)))
        return lost

    def _departure_message(self, departure: Departure) -> str:
        queue = self._settings.queue
        return departure_message(departure, register_timeout=queue.register_timeout_seconds,
                                 disconnect_grace=queue.disconnect_grace_seconds)

    def _announce_departure(self, request_id: str, removed: Removed, message: str) -> None:
        # A waiting client's connections must not be left with no news. One whose session was already
        # being created hears that dispatch's outcome instead (the session exists, or it failed).
        if removed is Removed.WAITING:
            self._events.publish(SessionFailed(request_id=request_id, message=message))

    async def settle(self, timeout: float | None = None) -> bool:
        """Wait for the take-backs still running behind answers (after store timeouts); True when none is
        left. The gateway waits for them when it stops, so a refund is not cut off by a restart; what is
        still running after ``timeout`` is cancelled (the register timeout and key expiry cover it)."""
        return await self._take_backs.drain(timeout)

    def _in_background(self, take_back: Coroutine[Any, Any, None], request_id: str) -> None:
        if not self._take_backs.spawn(take_back, label=request_id):
            log.warning("not taking back failed request %s now: %d take-backs already wait for the store",
                        request_id, len(self._take_backs))

    async def _take_back(self, request_id: str, subject: Subject | None, lease_id: str | None = None) -> None:
        """Withdraw a request whose queuing call failed from the queue, then refund its limits unless a
        dispatcher is serving it (or served it already): the session it gets counts until its webhook,
        as for a client that leaves while its session is being created. A pending lease the call would
        have turned into an entry is given back (a no-op when the call did run)."""
        if lease_id is not None:
            await self._serving.release(lease_id)
        message = self._departure_message(Departure.WITHDRAWN)
        try:
            removed = await self._store.remove(request_id, message=message)
            served = removed is Removed.DISPATCHING or (
                removed is Removed.NOTHING and await self._was_served(request_id))
        except RedisError as exc:
            # An entry left behind is abandoned by the hub's register timeout, which gives its unit back.
            # A warning (so a flood of them is summarised by the log throttle, not written one per request).
            log.warning("could not withdraw failed request %s from the queue now: %s", request_id, exc)
            served = False
        else:
            if removed:
                log.info("failed request %s withdrawn from the queue (%s)", request_id, removed)
                # Its client was told the request failed; another window that registered it hears so too.
                self._announce_departure(request_id, removed, message)
                self._events.publish(_WITHDRAWN)
        if served:
            log.warning("failed request %s was served by a dispatcher meanwhile; its limits stay counted",
                        request_id)
        elif subject is not None:
            await self._refund_quietly(request_id, subject)

    async def _was_served(self, request_id: str) -> bool:
        status = await self._store.status(request_id)
        return status is not None and status.status is RequestState.READY

    async def _refund_quietly(self, request_id: str, subject: Subject) -> None:
        try:
            await self._protection.refund(request_id, subject)
        except ProtectionUnavailable as exc:
            log.warning("could not refund the rate limits of %s (%s); they expire by themselves", request_id, exc)

    @staticmethod
    async def _store_or_unavailable(awaitable):  # type: ignore[no-untyped-def]
        try:
            return await awaitable
        except RedisError as exc:
            raise ServiceUnavailable(STORE_DOWN_MESSAGE, retry_after=5) from exc
