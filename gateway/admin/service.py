"""The admin use cases, on the parts the composition root already built: the controls and the snapshot
(kept in the store, so every process sees them at once), the session service (ending a session and removing
a request take the same paths as the webhook and a client's leave), the dispatcher and the metrics.

Every change is logged (``gateway.admin``) and added to the audit trail in the store, with who made it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from gateway.admission.control import Controls, ControlStore, Operator
from gateway.admission.snapshot import DeploymentSnapshot, SnapshotReader
from gateway.admission.types import EndResult
from gateway.queue.capacity import CapReading, capacity_reading
from gateway.model.departures import Departure
from gateway.queue.capacity import CapacityPolicy
from gateway.queue.service import SessionService

log = logging.getLogger("gateway.admin")

#: Changes listed with a snapshot.
RECENT_CHANGES = 20


def _fields(operator: Operator, action: str, **details: object) -> dict[str, object]:
    """A change's facts as log fields (JSON logs): who and what."""
    return {"admin_action": action, "operator": operator.name, "operator_ip": operator.ip, **details}


class RemoveResult:
    """What removing a waiting request found."""

    REMOVED = "removed"
    NOT_WAITING = "not waiting"  # known, but served, failed or expired already
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminView:
    """A snapshot with the effective cap and the latest changes."""

    snapshot: DeploymentSnapshot
    cap: CapReading
    recent_changes: list[dict]


class AdminService:
    """What the admin API does.

    :param controls: the operators' controls in the store.
    :param snapshots: reads the deployment's state.
    :param sessions: the session service (ending sessions, removing requests).
    :param capacity: this process's cap policy (the cap when no override is set).
    :param wake_dispatcher: called when slots may have become usable (resume, a higher cap, a freed slot).
    """

    def __init__(self, *, controls: ControlStore, snapshots: SnapshotReader, sessions: SessionService,
                 capacity: CapacityPolicy, wake_dispatcher: Callable[[], None]) -> None:
        self._controls = controls
        self._snapshots = snapshots
        self._sessions = sessions
        self._capacity = capacity
        self._wake = wake_dispatcher

    def cap_reading(self, controls: Controls) -> CapReading:
        return capacity_reading(self._capacity, controls.cap)

    async def view(self, limit: int) -> AdminView:
        """:raises RedisError: the store did not answer."""
        snapshot = await self._snapshots.read(limit)
        changes = await self._controls.audit_trail(RECENT_CHANGES)
        return AdminView(snapshot=snapshot, cap=self.cap_reading(snapshot.controls), recent_changes=changes)

    async def pause(self, operator: Operator) -> Controls:
        controls = await self._controls.pause(operator)
        log.warning("admin: %s paused dispatching: requests queue until it is resumed", operator,
                    extra=_fields(operator, "pause"))
        return controls

    async def resume(self, operator: Operator) -> Controls:
        controls = await self._controls.resume(operator)
        log.warning("admin: %s resumed dispatching", operator, extra=_fields(operator, "resume"))
        self._wake()
        return controls

    async def set_cap(self, cap: int | None, operator: Operator) -> CapReading:
        controls = await self._controls.set_cap(cap, operator)
        reading = self.cap_reading(controls)
        if cap is None:
            log.warning("admin: %s removed the cap override; the cap is %s again (from %s)", operator,
                        reading.sessions, reading.source, extra=_fields(operator, "capacity", cap=None))
        else:
            log.warning("admin: %s set the global cap to %d", operator, cap, extra=_fields(operator, "capacity", cap=cap))
        self._wake()
        return reading

    async def end_session(self, conversation_id: str, operator: Operator) -> EndResult:
        """Free the slot of a session whose webhook never came, as the webhook would.

        :raises ServiceUnavailable: the store did not answer.
        """
        result = await self._sessions.end_session(conversation_id)
        if result is not EndResult.UNKNOWN:
            log.warning("admin: %s ended session %s (%s)", operator, conversation_id, result,
                        extra=_fields(operator, "end session", conversation_session_id=conversation_id))
            await self._controls.record(operator, "end session", {"conversationSessionId": conversation_id,
                                                                  "result": str(result)})
        return result

    async def remove_request(self, request_id: str, operator: Operator) -> str:
        """Take a waiting request out of the queue; its client hears ``SessionFailed`` with the reason.

        :raises ServiceUnavailable: the store did not answer.
        """
        if await self._sessions.leave(request_id, reason=Departure.REMOVED):
            log.warning("admin: %s removed request %s from the queue", operator, request_id,
                        extra=_fields(operator, "remove request", unique_request_id=request_id))
            await self._controls.record(operator, "remove request", {"uniqueRequestId": request_id})
            return RemoveResult.REMOVED
        if await self._sessions.status(request_id) is None:
            return RemoveResult.UNKNOWN
        return RemoveResult.NOT_WAITING
