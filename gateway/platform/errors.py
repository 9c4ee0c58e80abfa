"""How a call to the platform failed, and what a retry would do about it.

Every failure surfaces as one exception type, :class:`PlatformError`, so the HTTP edge and the queue
processor have a single thing to catch; its :attr:`PlatformError.kind` says what a retry would do.
"""

from __future__ import annotations

import errno
import socket
from enum import StrEnum

class FailureKind(StrEnum):
    """What a failed initiate means for trying again.

    The line that matters is whether the platform may have created a session: such a call is never
    repeated, so that no client ever gets two platform sessions.
    """

    #: The platform refused because too many calls are live: wait in line and try later.
    PLATFORM_FULL = "platform_full"
    #: Certainly no session was created (nothing was sent, or the platform answered 5xx) and a retry may
    #: succeed.
    RETRYABLE = "retryable"
    #: The request was sent and no usable answer came (a timeout, a connection closed, a 504 of a proxy,
    #: a success we cannot read): the platform may have created a session, so it is not repeated.
    AMBIGUOUS = "ambiguous"
    #: No retry can succeed: the platform refused this request (4xx, ``success: false``), or we cannot
    #: even send it.
    PERMANENT = "permanent"


#: Statuses that say "not now": the request was not processed and the same request may succeed later.
_TRY_LATER_STATUSES = frozenset({408, 429})
#: Connect errors: no connection was made, so nothing reached the platform.
_CONNECT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN,
                             errno.EHOSTDOWN, errno.EADDRNOTAVAIL})
#: Words of a timeout that fired before the request was written: while resolving, connecting or
#: shaking hands with TLS, or waiting in our own client's queue (Tornado's simple client; curl says
#: "Connection/Resolving timed out"). Tornado's "Timeout during request" has none of them.
UNSENT_TIMEOUT_MARKERS = ("connect", "resolv", "request queue", "tls handshake")


class PlatformError(Exception):
    """The platform could not be reached, refused the request, or answered something unusable.

    :param message: human-readable text (the platform's own message when it sent one).
    :param code: the platform's code (e.g. ``InitiateWebSession:REGION_NOT_FOUND``) or one of ours:
        :attr:`TIMEOUT`, :attr:`UNREACHABLE`, :attr:`HTTP_STATUS`, :attr:`INVALID_RESPONSE`,
        :attr:`UNSENDABLE`.
    :param status: the HTTP status of the answer, ``None`` when there was no answer.
    :param sent: ``False`` when the request certainly never reached the platform (no connection was
        made, or it timed out in our own client's queue); ``True`` when it may have.
    """

    TIMEOUT = "TIMEOUT"
    UNREACHABLE = "UNREACHABLE"
    HTTP_STATUS = "HTTP_STATUS"
    INVALID_RESPONSE = "INVALID_RESPONSE"
    #: Our own failure to build the request (text with no UTF-8 form): nothing was sent.
    UNSENDABLE = "UNSENDABLE"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 sent: bool = True) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.sent = sent
        # Same text as the original's exception ("[code] message"), which operators grep for.
        super().__init__(f"[{code}] {message}" if code else message)

    @property
    def is_concurrency_limit(self) -> bool:
        """Whether the platform refused because too many calls are live (the original's text test)."""
        text = f"{self.code or ''} {self.message}".lower()
        return "concurrency" in text or "too many" in text

    @property
    def may_have_created(self) -> bool:
        """Whether the platform may have created a session despite the failure (never retry then)."""
        if not self.sent:
            return False
        if self.status is None or self.status == 504:
            return True  # sent and no answer, or a proxy that stopped waiting for the platform's
        return 200 <= self.status < 300 and self.code == self.INVALID_RESPONSE

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later and certainly made no session this time."""
        if self.code == self.UNSENDABLE or self.is_concurrency_limit:
            return False
        if not self.sent:
            return True
        return self.status is not None and (
            (500 <= self.status < 600 and self.status != 504) or self.status in _TRY_LATER_STATUSES)

    @property
    def kind(self) -> FailureKind:
        """What the failure means for trying again (see :class:`FailureKind`)."""
        if self.is_concurrency_limit:
            return FailureKind.PLATFORM_FULL
        if self.retryable:
            return FailureKind.RETRYABLE
        if self.may_have_created:
            return FailureKind.AMBIGUOUS
        return FailureKind.PERMANENT


def never_connected(exc: OSError) -> bool:
    """True for an error raised while connecting (refused, no route, DNS), before anything was sent."""
    return isinstance(exc, socket.gaierror) or exc.errno in _CONNECT_ERRNOS
