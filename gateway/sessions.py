"""The session-request use case, free of HTTP: admit now, queue, or refuse.

Handlers translate the results and errors here into status codes; this module never sees a request
object. The order of checks follows the original middleware (campaign, region, client IP, IP security,
rate limits, concurrency), with the defects it lists fixed: one atomic decision in Redis, no leaked slot
on any failure path, and the platform's own concurrency refusal sending the client to the queue.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from redis.exceptions import RedisError

from gateway.admission import AdmissionStore, ClaimedEntry, EndResult, Outcome, RequestStatus
from gateway.capacity import CapacityPolicy
from gateway.dispatcher import QueueDispatcher
from gateway.events import EventHub, QueueChanged
from gateway.payload import SessionRequest
from gateway.platform import PlatformClient, PlatformError
from gateway.settings import Settings

log = logging.getLogger("gateway.sessions")

#: The original's message for a failed direct initiate (it answered 500; we answer 502, a gateway error).
INITIATE_FAILED_MESSAGE = "An error occurred while trying to initiate the session."


class ServiceUnavailable(Exception):
    """The store (Redis) cannot be reached; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class QueueFull(ServiceUnavailable):
    """``Queue.MaxLength`` entries are already waiting."""


class PlatformUnavailable(Exception):
    """The platform refused or failed for a reason other than its concurrency limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class Admitted:
    web_socket_url: str
    conversation_session_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued:
    request_id: str
    position: int


STORE_DOWN_MESSAGE = "The session service is temporarily unavailable. Please try again shortly."
QUEUE_FULL_MESSAGE = "The waiting queue is full. Please try again later."


class SessionService:
    """Admission, status and release of voice sessions."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: AdmissionStore,
        platform: PlatformClient,
        capacity: CapacityPolicy,
        dispatcher: QueueDispatcher,
        events: EventHub,
    ) -> None:
        self._settings = settings
        self._store = store
        self._platform = platform
        self._capacity = capacity
        self._dispatcher = dispatcher
        self._events = events

    async def request_session(self, request: SessionRequest, *, client_ip: str) -> Admitted | Queued:
        """Admit ``request`` now (platform session created) or queue it.

        :raises ServiceUnavailable: the store is down (503).
        :raises QueueFull: the queue is at ``Queue.MaxLength`` (503).
        :raises PlatformUnavailable: the platform failed (502); the slot was given back.
        """
        request_id = str(uuid.uuid4())
        campaign = self._settings.platform.campaigns[request.campaign_id]
        data = {"request": request.to_dict(), "ip": client_ip}
        try:
            result = await self._store.admit(
                request_id=request_id,
                campaign=request.campaign_id,
                data=data,
                caps=self._capacity.caps(),
                pending_lease_seconds=self._settings.concurrency.pending_lease_seconds,
                max_queue_length=self._settings.queue.max_length,
            )
        except RedisError as exc:
            log.warning("admission failed, store unavailable: %s", exc)
            raise ServiceUnavailable(STORE_DOWN_MESSAGE, retry_after=5) from exc
        if result.claimed:
            # Older queued entries that were eligible go first; this call claimed them for us.
            self._dispatcher.dispatch_claimed(result.claimed)
        if result.outcome is Outcome.FULL:
            raise QueueFull(QUEUE_FULL_MESSAGE, retry_after=30)
        if result.outcome is Outcome.QUEUED:
            assert result.position is not None
            self._events.publish(QueueChanged(reason="joined"))
            return Queued(request_id=request_id, position=result.position)

        assert result.lease_id is not None
        try:
            session = await self._platform.initiate(campaign, request, client_ip)
        except PlatformError as exc:
            if exc.is_concurrency_limit:
                # The platform is fuller than we knew (other traffic on the account): wait in line.
                entry = ClaimedEntry(request_id=request_id, campaign=request.campaign_id,
                                     lease_id=result.lease_id, data=data)
                position = await self._store_or_unavailable(self._store.requeue_front(entry))
                log.info("platform at its concurrency limit; request %s queued at %d", request_id, position)
                self._events.publish(QueueChanged(reason="joined"))
                return Queued(request_id=request_id, position=position)
            log.warning("platform refused request %s: %s", request_id, exc)
            await self._release_quietly(result.lease_id)
            raise PlatformUnavailable(INITIATE_FAILED_MESSAGE) from exc
        except BaseException:
            await self._release_quietly(result.lease_id)
            raise
        try:
            await self._store.activate(
                lease_id=result.lease_id,
                conversation_session_id=session.conversation_session_id,
                request_id=None,
                session_lease_seconds=self._settings.concurrency.session_lease_seconds,
            )
        except RedisError as exc:
            # The platform session exists, so the client gets it. The pending lease expires by itself;
            # until the call ends the gateway undercounts by one, which the log makes visible.
            log.error("could not record session %s (store unavailable: %s); serving it anyway",
                      session.conversation_session_id, exc)
        return Admitted(web_socket_url=session.web_socket_url,
                        conversation_session_id=session.conversation_session_id)

    async def status(self, request_id: str) -> RequestStatus | None:
        return await self._store_or_unavailable(self._store.status(request_id))

    async def end_session(self, conversation_session_id: str) -> EndResult:
        """The platform says a conversation ended: free its slot and serve the next client at once."""
        result = await self._store_or_unavailable(self._store.end_session(conversation_session_id))
        if result is EndResult.RELEASED:
            self._dispatcher.kick()
        return result

    async def leave(self, request_id: str, *, reason: str = "left") -> bool:
        """Take a waiting request out of the queue (the client left, or abandoned it); the places behind
        it move up. Returns False when it was not waiting (already served, failed or unknown)."""
        removed = await self._store_or_unavailable(self._store.remove(request_id))
        if removed:
            log.info("request %s left the queue (%s)", request_id, reason)
            self._events.publish(QueueChanged(reason=reason))
        return removed

    async def _release_quietly(self, lease_id: str) -> None:
        try:
            await self._store.release_lease(lease_id)
        except RedisError as exc:
            # The pending lease expires after PendingLeaseSeconds anyway, so nothing leaks for long.
            log.warning("could not release lease %s now (%s); it expires by itself", lease_id, exc)

    @staticmethod
    async def _store_or_unavailable(awaitable):  # type: ignore[no-untyped-def]
        try:
            return await awaitable
        except RedisError as exc:
            raise ServiceUnavailable(STORE_DOWN_MESSAGE, retry_after=5) from exc
