"""Exceptions raised by the :mod:`geo` package.

Only start-up problems are exceptions: once the checker runs, a failed lookup is logged and treated as a
clean address, so nothing in the request path has to catch these.
"""

from __future__ import annotations

__all__ = ["GeoDatabaseError", "GeoError"]


class GeoError(Exception):
    """Base class for every error raised by :mod:`geo`."""


class GeoDatabaseError(GeoError):
    """A database that the block policy needs is missing, unreadable or not a MaxMind DB.

    :param path: the configured path (``None`` when no path was configured at all).
    :param message: what went wrong; the path is prepended so the operator sees which file.
    """

    def __init__(self, path: str | None, message: str) -> None:
        self.path = path
        text = f"{path}: {message}" if path is not None else message
        super().__init__(text)
