"""What the session use case answers: its results and the refusals it raises, each with the sentence a
person is shown. The HTTP handlers map each to its status code; nothing here knows HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.queue.protection import Refusal

STORE_DOWN_MESSAGE = "The session service is temporarily unavailable. Please try again shortly."
QUEUE_FULL_MESSAGE = "The waiting queue is full. Please try again later."
#: The original's message for a failed direct initiate (it answered 500; we answer 502, a gateway error).
INITIATE_FAILED_MESSAGE = "An error occurred while trying to initiate the session."


class ServiceUnavailable(Exception):
    """The store (Redis) cannot be reached; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class QueuingReplyLost(ServiceUnavailable):
    """A store call that may have queued the request failed, so nobody knows whether it did.

    :param lease_id: the pending lease the call would have turned into a queue entry, if any.
    """

    def __init__(self, message: str, *, retry_after: int, lease_id: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.lease_id = lease_id


class QueueFull(ServiceUnavailable):
    """``Queue.MaxLength`` entries are already waiting."""


class Refused(Exception):
    """IP security (403) or a rate limit (429) refused the request; nothing was consumed."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.status = refusal.status
        self.message = refusal.message
        self.headers = refusal.headers


class PlatformUnavailable(Exception):
    """The platform refused or failed for a reason other than its concurrency limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class Admitted:
    web_socket_url: str
    conversation_session_id: str
    headers: dict[str, str] = field(default_factory=dict)  # RateLimit headers


@dataclass(frozen=True, slots=True, kw_only=True)
class Queued:
    request_id: str
    position: int
    headers: dict[str, str] = field(default_factory=dict)
