"""The in-process event hook for queue outcomes.

The dispatcher announces what happens to queued requests here; the SignalR session hub subscribes and
turns the events into ``SessionReady`` / ``SessionFailed`` / ``QueuePositionUpdated`` messages, and the
metrics (:mod:`gateway.metrics`) count them. Keeping the hook in-process and synchronous means the
dispatcher never waits on a slow subscriber: subscribers that need I/O schedule it themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("gateway.queue.events")


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionReady:
    """A queued request got its platform session."""

    request_id: str
    web_socket_url: str
    #: When the request arrived (wall clock, :attr:`gateway.model.entry.QueueEntry.queued_at`), if known.
    queued_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFailed:
    """A queued request could not get a platform session; ``message`` is what the client is shown."""

    request_id: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueChanged:
    """Entries left the queue or joined it, so waiting clients' positions may have moved."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchAttempted:
    """The dispatcher made one platform call for a queued request; ``result`` is ``"success"`` or the
    :class:`~gateway.platform.errors.FailureKind` of its failure."""

    result: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchFailed:
    """A dispatch ended without a session and its client was told so; ``kind`` is the
    :class:`~gateway.platform.errors.FailureKind` of the last call, or ``"gateway"`` for our own failure."""

    kind: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreFailed:
    """A store (Redis) call of ``component`` failed; counted, the component handles the failure itself."""

    component: str


Event = SessionReady | SessionFailed | QueueChanged | DispatchAttempted | DispatchFailed | StoreFailed
Subscriber = Callable[[Event], None]


class EventHub:
    """Fans events out to subscribers; one failing subscriber never stops the others."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add ``subscriber``; returns a function that removes it again."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for subscriber in tuple(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # a subscriber's bug must not stop the dispatcher or other subscribers
                log.exception("event subscriber %r failed on %r", subscriber, event)
