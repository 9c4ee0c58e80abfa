"""The in-process event hook for queue outcomes.

The dispatcher announces what happens to queued requests here; the SignalR session hub subscribes and
turns the events into ``SessionReady`` / ``SessionFailed`` / ``QueuePositionUpdated`` messages. Keeping the
hook in-process and synchronous means the dispatcher never waits on a slow subscriber: subscribers that
need I/O schedule it themselves.
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


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFailed:
    """A queued request could not get a platform session; ``message`` is what the client is shown."""

    request_id: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueChanged:
    """Entries left the queue or joined it, so waiting clients' positions may have moved."""

    reason: str


Event = SessionReady | SessionFailed | QueueChanged
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
