"""Reading typed values out of the merged tree: objects, lists, strings, numbers, flags, addresses.

Each reader reports a wrong value as a problem at its key path and returns ``None``, so binding carries on
and every mistake in the file is listed at once. How loosely values bind is listed under "Decisions" in
:mod:`gateway.config`.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.config.problems import Report, Section, failed, show
from gateway.config.source import Node
from gateway.config.settings import PlatformSettings

T = TypeVar("T")

_MAX_ASN = 2**32 - 1


class Binder(Report):
    """Typed readers over :class:`Section` views; the per-section binders share one binder, and so one report."""

    def __init__(self) -> None:
        super().__init__()
        #: Known before the leases are checked, even when the platform section has other problems.
        self.request_timeout = PlatformSettings(api_secret_token="", base_url="", campaigns={}).request_timeout_seconds

    # ---- shapes

    def section(self, parent: Section | None, name: str) -> Section | None:
        """A nested object, or ``None`` when absent (or wrong, which is reported)."""
        value = parent.take(name) if parent is not None else None
        path = parent.child_path(name) if parent is not None else name
        if value is None:
            return None
        if not isinstance(value, Node) or value.is_array:
            self.problem(path, "must be a JSON object ({ ... })", value)
            return None
        return Section(value, path)

    def items(self, section: Section, name: str) -> list[tuple[str, Any]] | None:
        """The elements of a list, in index order; ``None`` when absent or wrong."""
        value = section.take(name)
        path = section.child_path(name)
        if value is None:
            return None
        if not isinstance(value, Node):
            self.problem(path, "must be a JSON list ([ ... ])", value)
            return None
        indexed: list[tuple[int, Any]] = []
        for key, (spelling, item) in value.entries.items():
            if not (key.isascii() and key.isdigit()):
                self.problem(path, f"must be a JSON list, but has the named key {spelling!r}; list items are numbered from 0")
                return None
            indexed.append((int(key), item))
        # ASP.NET binds list items in index order and closes gaps; so do we.
        return [(f"{path}[{index}]", item) for index, item in sorted(indexed, key=lambda pair: pair[0])]

    def list_of(self, section: Section, name: str, convert: Callable[[str, Any], T | None]) -> tuple[T, ...]:
        out: list[T] = []
        for path, item in self.items(section, name) or ():
            converted = convert(path, item)
            if converted is not None:
                out.append(converted)
        return tuple(out)

    # ---- scalars

    def string(self, path: str, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return str(value)  # a plain str, even for a value from the environment
        # ASP.NET stores every JSON scalar as text, so a numeric id written without quotes still binds.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        self.problem(path, "must be a string", value)
        return None

    def required_string(self, section: Section, name: str, how: str) -> str | None:
        path = section.child_path(name)
        value = self.string(path, section.take(name))
        if value is None and not failed(self.problems, path):
            self.problem(path, f"missing; {how}")
        elif value is not None and not value.strip():
            self.problem(path, f"is empty; {how}")
            return None
        return value

    def integer(self, path: str, value: Any, *, minimum: int, maximum: int | None = None, hint: str = "") -> int | None:
        if value is None:
            return None
        number: int | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", value):
            number = int(value)
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        if number is None:
            self.problem(path, f"must be a whole number {bounds}, got {show(value)}{hint}", value)
            return None
        if number < minimum or (maximum is not None and number > maximum):
            self.problem(path, f"must be {bounds}, got {number}{hint}", value)
            return None
        return number

    def seconds(self, path: str, value: Any) -> float | None:
        if value is None:
            return None
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None or not math.isfinite(number) or number <= 0:
            self.problem(path, f"must be a number of seconds greater than 0, got {show(value)}", value)
            return None
        return number

    def boolean(self, path: str, value: Any) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.problem(path, f"must be true or false, got {show(value)}", value)
        return None

    def address(self, path: str, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        try:
            return str(ipaddress.ip_address(text.strip()))
        except ValueError:
            self.problem(path, f"{text!r} is not an IP address (e.g. 172.19.0.1 or ::1); networks go in KnownNetworks", value)
            return None

    def network(self, path: str, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        try:
            return str(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            self.problem(path, f"{text!r} is not a network in CIDR form (e.g. 10.0.0.0/8 or 2001:db8::/32)", value)
            return None

    def asn(self, path: str, value: Any) -> int | None:
        if isinstance(value, str) and value.strip().upper().startswith("AS"):
            value = value.strip()[2:]
        return self.integer(path, value, minimum=1, maximum=_MAX_ASN, hint=" (an AS number such as 15169 or \"AS15169\")")
