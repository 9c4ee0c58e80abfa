"""Collecting problems and warnings, each named by the key path it concerns (``Section.Key[0]``).

Every problem is gathered before :class:`~gateway.config.errors.ConfigError` is raised, so an operator fixes the
file in one pass; keys nobody read become warnings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gateway.config.source import EnvValue, Node


class Section:
    """A view of one JSON object that remembers which keys were read, to warn about the rest."""

    def __init__(self, node: Node, path: str) -> None:
        self.node = node
        self.path = path
        self._used: set[str] = set()

    def child_path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def take(self, name: str) -> Any:
        """The value under ``name`` (any casing), or ``None``."""
        key = name.casefold()
        self._used.add(key)
        entry = self.node.entries.get(key)
        return None if entry is None else entry[1]

    def has(self, name: str) -> bool:
        entry = self.node.entries.get(name.casefold())
        return entry is not None and entry[1] is not None

    def unused(self) -> Iterator[str]:
        for key, (spelling, _value) in self.node.entries.items():
            if key not in self._used:
                yield spelling


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
            self.warn(section.child_path(spelling), "unknown key, ignored")


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
