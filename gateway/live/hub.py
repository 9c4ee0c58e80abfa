"""``/sessionHub``: the live queue over SignalR, across any number of gateway processes.

Clients call ``Register(uniqueRequestId)`` after a 202 and receive ``SessionReady {webSocketUrl}``,
``SessionFailed {message}`` and ``QueuePositionUpdated {queuePosition, estimatedWaitSeconds}``.
Each request id is a SignalR group, so an outcome produced by the dispatcher of any process reaches
the client through the lifetime manager: the Redis backplane when ``RedisConnectionString`` is set,
the in-memory manager with the embedded store (one process only).

This module wires the pieces: presence in Redis (:mod:`gateway.live.presence`), coalesced per-process
position rounds (:mod:`gateway.live.positions`) and the abandonment reaper (:mod:`gateway.live.abandonment`).

Outcomes come first: ``SessionReady``/``SessionFailed`` are written to this process's connections of the
request inside the dispatcher's event (the backplane carries them to the others), and a position round
holds while a dispatch is under way, so at 5,000 waiting clients a round does not delay the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from redis.exceptions import RedisError

from gateway.admission.store import MAX_ID_LENGTH
from gateway.admission.types import RequestState
from gateway.background import Periodic, TaskSet
from gateway.live.abandonment import AbandonmentReaper
from gateway.live.outages import StoreOutages, observe
from gateway.live.position_message import position_message
from gateway.live.positions import PositionBroadcaster
from gateway.live.presence import PresenceStore
from gateway.live.resync import resend_missed_outcomes
from gateway.live.tuning import HubObserver, HubTuning
from gateway.model.departures import Departure
from gateway.model.text import is_sendable, unsendable_message
from gateway.queue.answers import ServiceUnavailable
from gateway.queue.events import Event, QueueChanged, SessionFailed, SessionReady
from signalr import Hub, HubError, HubOptions
from signalr.hubs.lifetime import HubLifetimeManager, invocation
from signalr.tornado import hub_routes

if TYPE_CHECKING:
    from gateway.admission.store import AdmissionStore
    from gateway.config.settings import Settings
    from gateway.queue.service import SessionService

log = logging.getLogger("gateway.live.hub")

HUB_PATH = "/sessionHub"

UNKNOWN_ID_MESSAGE = "Unknown uniqueRequestId: no session request with this id exists."
EXPIRED_ID_MESSAGE = ("This uniqueRequestId has expired: its session was already served, it left the queue, "
                      "or it waited without a connection for too long. Please request a new session.")
BAD_ID_MESSAGE = f"uniqueRequestId must be a non-empty string of at most {MAX_ID_LENGTH} characters."
UNAVAILABLE_MESSAGE = "The waiting queue is temporarily unavailable. Please try again shortly."


class SessionHub(Hub):
    """The client-callable methods; a subclass made by :class:`SessionHubService` binds ``_service``."""

    _service: ClassVar[SessionHubService]

    async def on_connected(self) -> None:
        self._service.count_connection(self.context.transport, self.context.protocol, opened=True)

    async def register(self, uniqueRequestId: str) -> dict[str, Any]:  # noqa: N803 - the wire name
        """Join the request's group; returns ``{status, queuePosition}`` and replays a known outcome."""
        return await self._service.register(self.context.connection_id, uniqueRequestId)

    async def leave(self, uniqueRequestId: str) -> None:  # noqa: N803
        """Leave the queue; the places behind move up."""
        await self._service.leave(self.context.connection_id, uniqueRequestId)

    async def on_disconnected(self, exception: BaseException | None) -> None:
        self._service.count_connection(self.context.transport, self.context.protocol, opened=False)
        await self._service.connection_closed(self.context.connection_id)


def _check_id(value: Any) -> str:
    """The request id of a hub call, lower-cased: ids are UUIDs, which the REST routes also take in
    any letter case, and the group an outcome is sent to is named by the lower-case form."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LENGTH:
        raise HubError(BAD_ID_MESSAGE)
    if not is_sendable(value):
        # It could be neither looked up in Redis nor named as a group: refuse it before either.
        raise HubError(unsendable_message("uniqueRequestId"))
    return value.lower()


class SessionHubService:
    """The session hub of one gateway process, built by the composition root from the services it uses.

    :param settings: the gateway's settings (queue timers, allowed origins).
    :param store: the admission store (queue order for positions).
    :param sessions: the session service (status, leave, and the catch-up after a store reset).
    :param presence: the presence store shared with the status endpoint.
    :param clock: wall clock in seconds.
    :param origin_allowed: the gateway's CORS decision, the one source of truth for browser origins.
    :param lifetime: the lifetime manager (the Redis backplane across processes); in-memory by default.
    :param tuning: timers; defaults suit production.
    :param observer: told of connections, the wait estimate's error and store failures (the metrics).
    """

    def __init__(self, settings: Settings, *, store: AdmissionStore, sessions: SessionService,
                 presence: PresenceStore, clock: Callable[[], float], origin_allowed: Callable[[str], bool],
                 lifetime: HubLifetimeManager | None = None, tuning: HubTuning | None = None,
                 observer: HubObserver | None = None) -> None:
        self.tuning = tuning or HubTuning()
        self._observer = observer
        self._settings = settings
        self._store = store
        self._sessions = sessions
        self._clock = clock
        options = self.tuning.hub_options or HubOptions()
        options = replace(options, allowed_origins=tuple(settings.allowed_origins),
                          connection_id_prefix=settings.instance.token_prefix + options.connection_id_prefix)
        hub_class = type("SessionHub", (SessionHub,), {"_service": self})
        self.routes, self.server = hub_routes(HUB_PATH, hub_class, options=options, lifetime_manager=lifetime)
        # (with "*" and case-insensitive matching, as for the REST routes)
        self.server.origin_allowed = origin_allowed  # type: ignore[method-assign]
        self.lifetime = self.server.lifetime
        self.presence = presence
        self.positions = PositionBroadcaster(
            queue_ids=self._store.queue_ids, served_times=self.presence.served_times,
            local_requests=lambda: self._by_request.keys(), send=self._send_position,
            clock=self._clock, monotonic=time.monotonic,
            min_interval=self.tuning.position_interval, poll_interval=self.tuning.poll_interval,
            on_estimate_error=observer.wait_estimate_error if observer is not None else None,
            on_store_error=lambda: self._store_error("positions"), arrived_at=self.presence.arrived_at,
            queue_signature=self.presence.queue_signature, change_poll=self.tuning.change_poll)
        #: When this process could not reach the store: the reaper does not count it against anyone.
        self.outages = StoreOutages()
        self.reaper = AbandonmentReaper(
            presence=self.presence, leave=self._sessions.leave, clock=self._clock,
            register_timeout=settings.queue.register_timeout_seconds,
            disconnect_grace=settings.queue.disconnect_grace_seconds, interval=self.tuning.reap_interval,
            outages=self.outages, on_recovery=self._touch_local,
            on_store_error=lambda: self._store_error("abandonment"))
        # Local bookkeeping: request id -> connection ids of this process that registered it, and back.
        self._by_request: dict[str, set[str]] = {}
        self._by_connection: dict[str, set[str]] = {}
        self._tasks = TaskSet("session hub delivery", log=log)
        self._heartbeat = Periodic(self._touch_local, interval=self._heartbeat_interval, name="presence heartbeat",
                                   log=log)
        self._stopping = False
        self._resyncing = self._resync_wanted = False
        self._touch_failing_since: float | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.server.start()
        self.lifetime.on_resubscribed(self._resync)
        self.positions.start()
        self.reaper.start()
        self._heartbeat.start()

    async def stop(self) -> None:
        """Stop timers, record that our clients left now (so their grace starts), and send every
        client Close with ``allowReconnect`` so it reconnects to another process."""
        self._stopping = True
        await self.positions.stop()
        await self.reaper.stop()
        await self._heartbeat.stop()
        await self._touch_local()
        await self.server.shutdown()
        await self._tasks.wait(2)

    # -- hub methods -----------------------------------------------------------------------------

    async def register(self, connection_id: str, request_id: Any) -> dict[str, Any]:
        request_id = _check_id(request_id)
        # Join first, read the status second: an outcome published in between reaches the group, and
        # one published before is in the status. (Both may happen; the client then hears it twice.)
        # Joining costs no Redis command (the backplane's shared layout), so an id the store does not
        # know costs one script call and nothing else.
        # A repeated Register that fails (say, during a Redis outage) must not undo the earlier one.
        already = request_id in self._by_connection.get(connection_id, ())
        await self.server.context.groups.add(connection_id, request_id)
        self._by_request.setdefault(request_id, set()).add(connection_id)
        self._by_connection.setdefault(connection_id, set()).add(request_id)
        try:
            # One round trip: the status, and the presence record while the request waits.
            registration = await self.presence.register(request_id)
            status = registration.status
            if status is None or status.status is RequestState.EXPIRED:
                raise HubError(UNKNOWN_ID_MESSAGE if status is None else EXPIRED_ID_MESSAGE)
            if registration.abandoned:
                raise HubError(EXPIRED_ID_MESSAGE)
        except HubError:
            await self._forget(connection_id, request_id)
            raise
        except RedisError as exc:
            if not already:
                await self._forget(connection_id, request_id)
            self._store_error("hub")
            log.warning("Register(%s) failed, store unavailable: %s", request_id, exc)
            raise HubError(UNAVAILABLE_MESSAGE) from exc
        if status.status is RequestState.QUEUED and status.position is not None:
            # A round that sent a newer place while the status was read is followed by one more.
            if self.positions.tracker.told(request_id, status.position) not in (None, status.position):
                self.positions.changed()
        elif status.status is RequestState.READY:
            # After the completion: the widget stops the connection on SessionReady, which would
            # otherwise cancel its own pending Register call.
            self._after_completion(connection_id, "SessionReady", {"webSocketUrl": status.web_socket_url})
        elif status.status is RequestState.FAILED:
            self._after_completion(connection_id, "SessionFailed", {"message": status.message})
        return {"status": status.status, "queuePosition": status.position}

    async def leave(self, connection_id: str, request_id: Any) -> None:
        request_id = _check_id(request_id)
        # Out of the group first: the SessionFailed ("you left") announced to the request's other
        # connections is no news to the one that asked.
        await self._forget(connection_id, request_id)
        try:
            await self._sessions.leave(request_id, reason=Departure.LEFT)
        except ServiceUnavailable as exc:
            raise HubError(UNAVAILABLE_MESSAGE) from exc

    def count_connection(self, transport: str | None, protocol: str | None, *, opened: bool) -> None:
        if self._observer is not None:
            (self._observer.hub_connected if opened else self._observer.hub_disconnected)(transport, protocol)

    async def connection_closed(self, connection_id: str) -> None:
        gone = [request_id for request_id in self._by_connection.pop(connection_id, ())
                if self._drop_holder(connection_id, request_id)]
        # The last local connection of these requests left: their grace period starts now (unless a
        # connection elsewhere keeps heartbeating them). At shutdown stop() touched them all at once.
        if not self._stopping:
            await self._touch(gone)

    async def store_reset(self) -> None:
        """The store was reset: clients of this process whose requests it lost hear why at once (in the
        background: an admission waiting for the reset to be handled must not wait for this)."""
        self._spawn(self._sessions.lost_in_reset(list(self._by_request)))

    # -- events ----------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """EventHub subscriber: synchronous, so I/O is scheduled, never awaited here."""
        if isinstance(event, SessionReady):
            self._outcome(event.request_id, "SessionReady", {"webSocketUrl": event.web_socket_url})
        elif isinstance(event, SessionFailed):
            self._outcome(event.request_id, "SessionFailed", {"message": event.message})
        elif isinstance(event, QueueChanged):
            # A dispatch's outcome goes out before positions; a requeue ends that dispatch instead.
            if event.reason == "dispatched":
                self.positions.hold()
            elif event.reason == "requeued":
                self.positions.unhold()
            self.positions.changed()

    def _outcome(self, request_id: str, method: str, payload: Mapping[str, Any]) -> None:
        # This process's connections get the outcome now, inside the dispatcher's own loop turn: a
        # position round in progress cannot hold it back, and nothing of theirs is queued behind a
        # message still to come. The group send then reaches connections elsewhere (excluding these).
        local = frozenset(self._by_request.get(request_id, ()))
        if local:
            message = invocation(method, (dict(payload),))
            for connection_id in local:
                sink = self.lifetime.local_connection(connection_id)
                if sink is not None:
                    sink.send_serialized(message)
        self.positions.retire(request_id, served=method == "SessionReady")
        self.positions.unhold()
        self._spawn(self._outcome_elsewhere(request_id, method, payload, local))

    async def _outcome_elsewhere(self, request_id: str, method: str, payload: Mapping[str, Any],
                                 delivered: frozenset[str]) -> None:
        await self.lifetime.send_group(request_id, method, (dict(payload),), exclude=delivered)
        try:
            await self.presence.record_served(request_id)
        except RedisError as exc:
            log.warning("could not record the service of %s for the wait estimate: %s", request_id, exc)
        # After the record: the round this starts estimates from a history that includes this service.
        self.positions.changed()

    # -- helpers ---------------------------------------------------------------------------------

    def local_request_ids(self) -> list[str]:
        """Request ids registered by connections of this process."""
        return list(self._by_request)

    def _send_position(self, request_id: str, position: int, estimated_wait_seconds: int | None) -> None:
        holders = self._by_request.get(request_id)
        if not holders:
            return
        message = position_message(position, estimated_wait_seconds)
        local_connection = self.lifetime.local_connection
        for connection_id in tuple(holders):
            sink = local_connection(connection_id)
            if sink is not None:
                sink.send_serialized(message)

    def _resync(self) -> None:
        # The backplane was down: outcomes published meanwhile never came (see gateway.live.resync). One pass
        # at a time, however often a flapping connection comes back; one more after it covers the latest.
        self._resync_wanted = True
        if not self._resyncing:
            self._resyncing = True
            self._spawn(self._resync_passes())

    async def _resync_passes(self) -> None:
        try:
            while self._resync_wanted:
                self._resync_wanted = False
                await resend_missed_outcomes(self._by_request, queue_ids=self._store.queue_ids,
                                             status=self._sessions.status, send=self._after_completion)
        finally:
            self._resyncing = False

    def _after_completion(self, connection_id: str, method: str, payload: Mapping[str, Any]) -> None:
        def deliver() -> None:
            sink = self.lifetime.local_connection(connection_id)
            if sink is not None:
                sink.send_serialized(invocation(method, (dict(payload),)))

        asyncio.get_running_loop().call_soon(deliver)

    def _drop_holder(self, connection_id: str, request_id: str) -> bool:
        """``connection_id`` no longer holds ``request_id`` here; True when no local connection does."""
        holders = self._by_request.get(request_id)
        if holders is None:
            return False
        holders.discard(connection_id)
        if holders:
            return False
        del self._by_request[request_id]
        self.positions.forget(request_id)
        return True

    async def _forget(self, connection_id: str, request_id: str) -> None:
        self._drop_holder(connection_id, request_id)
        self._by_connection.get(connection_id, set()).discard(request_id)
        try:
            await self.server.context.groups.remove(connection_id, request_id)
        except Exception as exc:  # the connection may be gone already; nothing to undo then
            log.debug("could not remove %s from group %s: %s", connection_id, request_id, exc)

    async def _touch(self, request_ids: list[str], *, catch_up: bool = True) -> None:
        """Heartbeat ``request_ids``; when this answer ends an outage and ``catch_up``, every local
        registration is touched too (their heartbeats could not land meanwhile)."""
        if not request_ids:
            return
        try:
            _, recovered = await observe(self.outages, self._clock, self.presence.touch(request_ids))
        except RedisError as exc:
            self._store_error("hub")
            # Once per outage, not once per disconnecting client.
            if self._touch_failing_since is None:
                self._touch_failing_since = self._clock()
                log.warning("presence heartbeat failed (%s); waiting clients keep their places, and the "
                            "time the store is unreachable does not count against them", exc)
            return
        if self._touch_failing_since is not None:
            log.info("presence heartbeat works again after %.1f s", self._clock() - self._touch_failing_since)
            self._touch_failing_since = None
        if recovered and catch_up:
            await self._touch_local()

    async def _touch_local(self) -> None:
        """Touch every request registered by a connection of this process."""
        await self._touch(list(self._by_request), catch_up=False)

    def _heartbeat_interval(self) -> float:
        grace = max(1.0, float(self._settings.queue.disconnect_grace_seconds))
        interval = min(self.tuning.heartbeat_interval, grace / 3)
        # While the store does not answer, try every second: the first touch that lands after an outage
        # is what keeps a connected client from looking gone.
        return min(interval, 1.0) if self.outages.failing else interval

    def _store_error(self, component: str) -> None:
        if self._observer is not None:
            self._observer.store_error(component)

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)


__all__ = ["HUB_PATH", "HubObserver", "HubTuning", "SessionHub", "SessionHubService"]
