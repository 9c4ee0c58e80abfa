"""The exceptions of :mod:`ratelimit`.

Only the gateway edge turns these into HTTP answers; nothing here knows about HTTP.
"""

from __future__ import annotations


class RateLimitError(Exception):
    """Root of every error raised by :mod:`ratelimit`."""


class InvalidRule(RateLimitError, ValueError):
    """A rule, a set of rules or an argument is malformed (a programming or configuration error).

    It is a :class:`ValueError` too, so settings validation that already catches ``ValueError`` keeps working.
    """


class StorageError(RateLimitError):
    """The store (Redis or the embedded one) failed or answered something unexpected.

    The original :mod:`redis` exception is chained as ``__cause__``. The admission path decides whether to
    fail open or closed; this package never guesses.
    """
