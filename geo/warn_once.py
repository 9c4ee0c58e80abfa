"""Warnings logged once per kind of problem, so repeated bad input or a broken file cannot flood the log."""

from __future__ import annotations

import logging

__all__ = ["WarnOnce"]

#: Keys remembered at most; past this every problem is still logged, just no longer deduplicated.
MAX_KEYS = 1000


class WarnOnce:
    """Log the first occurrence of each key as a warning and later ones at debug level.

    :param logger: where the lines go.
    """

    __slots__ = ("_logger", "_seen")

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[str] = set()

    def warning(self, key: str, message: str, *args: object) -> None:
        # One line per kind is enough to notice a problem; the rest go to debug for whoever digs.
        if key in self._seen:
            self._logger.debug(message, *args)
            return
        if len(self._seen) < MAX_KEYS:
            self._seen.add(key)
        self._logger.warning(message, *args)

    def forget(self, key: str) -> None:
        """Warn again the next time ``key`` occurs (the problem went away and may come back)."""
        self._seen.discard(key)
