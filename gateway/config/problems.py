"""Collecting problems and warnings, each named by the key path it concerns (``Section.Key[0]``).

Every problem is gathered before :class:`~gateway.config.errors.ConfigError` is raised, so an operator fixes the
file in one pass; keys nobody read become warnings, with the known key of that section they were
probably meant to be.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from gateway.config.source import EnvValue, Node


#: How alike (difflib's ratio, case-insensitive) an unknown key and a known one must be to suggest it:
#: catches a dropped, doubled or swapped letter or a missing word in a long key, not unrelated short ones.
SIMILAR_KEY_RATIO = 0.75


class Section:
    """A view of one JSON object that remembers which keys were read, to warn about the rest."""

    def __init__(self, node: Node, path: str) -> None:
        self.node = node
        self.path = path
        #: The keys read, case-folded, with their spelling in the code.
        self._used: dict[str, str] = {}

    def child_path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def take(self, name: str) -> Any:
        """The value under ``name`` (any casing), or ``None``."""
        key = name.casefold()
        self._used.setdefault(key, name)
        entry = self.node.entries.get(key)
        return None if entry is None else entry[1]

    def has(self, name: str) -> bool:
        entry = self.node.entries.get(name.casefold())
        return entry is not None and entry[1] is not None

    def unused(self) -> Iterator[str]:
        for key, (spelling, _value) in self.node.entries.items():
            if key not in self._used:
                yield spelling

    def likely_meant(self, spelling: str) -> str | None:
        """The known key most like an unknown one, when one is alike enough (see :data:`SIMILAR_KEY_RATIO`)."""
        close = difflib.get_close_matches(spelling.casefold(), self._used, n=1, cutoff=SIMILAR_KEY_RATIO)
        return self._used[close[0]] if close else None


class Report:
    """The problems (which stop start-up) and warnings (which are logged) found so far."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, path: str, text: str, value: Any = None) -> None:
        self.problems.append(f"{path}: {text}{env_source(value)}")

    def warn(self, path: str, text: str) -> None:
        self.warnings.append(f"{path}: {text}")

    def warn_unknown(self, section: Section) -> None:
        for spelling in section.unused():
            meant = section.likely_meant(spelling)
            hint = f"; did you mean {meant}?" if meant is not None else ""
            self.warn(section.child_path(spelling), f"unknown key, ignored{hint}")


def show(value: Any) -> str:
    if isinstance(value, Node):
        return "a list" if value.is_array else "an object"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def env_source(value: Any) -> str:
    if isinstance(value, EnvValue):
        return f" (from environment variable {value.variable})"
    return ""


def failed(problems: list[str], path: str) -> list[str]:
    """Problems already reported for ``path``, so a wrong type is not also called missing."""
    return [p for p in problems if p.startswith((path + ":", path + " ", path + "["))]
