"""The one serving path: a request that holds a slot gets its platform session here.

Two callers hold slots: an admission that found room at once (:class:`gateway.queue.service.SessionService`)
and the dispatcher, for a queued entry it claimed (:class:`gateway.queue.dispatcher.QueueDispatcher`). Both
do the same steps, written once here: ask the platform for a session; on the platform's concurrency refusal
put the request back at the front of the queue; on any other failure give the slot back; once a session
exists, record it (the slot becomes the session's, and the client's rate-limit unit is bound to it). What
differs is what each caller tells its client, and how hard it tries: a direct admission answers its HTTP
request at once, the dispatcher retries what certainly created no session and announces the outcome on
the hub.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from gateway.model.entry import DamagedEntry, QueueEntry
from gateway.platform.errors import PlatformError
from gateway.queue.protection import ProtectionUnavailable, Subject, subject_of

if TYPE_CHECKING:
    from gateway.admission.store import AdmissionStore
    from gateway.admission.types import ClaimedEntry, UnitBinding
    from gateway.config.settings import Settings
    from gateway.platform.client import PlatformClient
    from gateway.platform.wire import InitiatedSession
    from gateway.queue.protection import ClientProtection

log = logging.getLogger("gateway.queue.serving")


class UnknownCampaign(PlatformError):
    """The entry names a campaign that is no longer configured: no call can be made for it (a permanent
    failure: nothing was sent)."""


class SessionServing:
    """Platform calls, requeues and recordings for requests that hold a slot (see the module docstring).

    :param store: the admission store.
    :param platform: the platform client.
    :param settings: campaigns and the session lease.
    :param protection: the rate limits whose units are given back or bound to a session (None: no limits).
    """

    def __init__(self, *, store: AdmissionStore, platform: PlatformClient, settings: Settings,
                 protection: ClientProtection | None) -> None:
        self._store = store
        self._platform = platform
        self._settings = settings
        self._protection = protection

    async def initiate(self, claimed: ClaimedEntry) -> InitiatedSession:
        """Ask the platform for ``claimed``'s session.

        :raises PlatformError: the call failed (its ``kind`` says what a retry would do); also
            :class:`UnknownCampaign` (permanent).
        :raises DamagedEntry: the stored entry cannot be read (it can never be served).
        """
        campaign = self._settings.platform.campaigns.get(claimed.campaign)
        if campaign is None:
            raise UnknownCampaign(f"campaign {claimed.campaign!r} is no longer configured",
                                  code=PlatformError.UNSENDABLE, sent=False)
        entry = QueueEntry.from_data(claimed.data)
        return await self._platform.initiate(campaign, entry.request, entry.ip)

    async def requeue(self, claimed: ClaimedEntry) -> int:
        """The platform said it is full: back to the front of the queue, keeping the request's turn.

        :return: the queue position; 0 when the entry was settled elsewhere meanwhile; -1 when its client
            left meanwhile (then the rate-limit unit it kept for the session it might have got goes back).
        :raises RedisError: the store did not answer (the requeue may or may not have happened).
        """
        position = await self._store.requeue_front(claimed)
        if position < 0:
            await self.give_back_unit(claimed.request_id, claimed.data)
        return position

    async def activate(self, claimed: ClaimedEntry, session: InitiatedSession, *, queued: bool) -> None:
        """Record a session the platform created: the slot becomes the session's, with the session lease,
        and the client's concurrency unit is re-armed for it and bound to the conversation id.

        :param queued: whether ``claimed`` was a queue entry (its entry leaves the store).
        :raises RedisError: the store did not answer.
        """
        await self._store.activate(
            lease_id=claimed.lease_id,
            conversation_session_id=session.conversation_session_id,
            request_id=claimed.request_id if queued else None,
            session_lease_seconds=self._settings.concurrency.session_lease_seconds,
            # Built for each attempt: the unit's arguments carry the time, so a retried activation
            # still makes the unit expire with the session lease.
            units=self._activation_units(claimed, session.conversation_session_id),
        )

    async def release(self, lease_id: str) -> None:
        """Give a slot back after a failed call; a store that does not answer lets the lease expire."""
        try:
            await self._store.release_lease(lease_id)
        except RedisError as exc:
            log.warning("could not release lease %s now (%s); it expires by itself", lease_id, exc)

    async def give_back_unit(self, request_id: str, data: Any) -> None:
        """The request ended without a session: the concurrency unit it held goes back (its hits stay).

        :param data: the entry's stored data.
        """
        if self._protection is not None:
            await self._with_subject(self._protection.left, request_id, data, "give back the rate-limit unit of")

    async def refund(self, request_id: str, data: Any) -> None:
        """The request never got a session: everything it consumed goes back, so a retry does not count."""
        if self._protection is not None:
            await self._with_subject(self._protection.refund, request_id, data, "refund the rate limits of")

    async def _with_subject(self, give_back: Callable[[str, Subject], Awaitable[None]], request_id: str,
                            data: Any, what: str) -> None:
        # Quietly: the units and hits lapse by themselves if the store does not answer now.
        subject = self.subject(data)
        if subject is None:
            return
        try:
            await give_back(request_id, subject)
        except ProtectionUnavailable as exc:
            log.warning("could not %s %s now: %s", what, request_id, exc)

    @staticmethod
    def subject(data: Any) -> Subject | None:
        """Who an entry with this stored data is counted against, or None when the data is damaged
        (then nothing can be given back: its units lapse by themselves)."""
        try:
            return subject_of(QueueEntry.from_data(data))
        except DamagedEntry:
            return None

    def _activation_units(self, claimed: ClaimedEntry, conversation_session_id: str) -> UnitBinding | None:
        subject = self.subject(claimed.data)
        if self._protection is None or subject is None:
            return None
        return self._protection.activation_units(claimed.request_id, subject, conversation_session_id)
