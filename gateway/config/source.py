"""Where the raw configuration comes from: ``appsettings.json`` (or a mapping) merged with environment variables.

The result is a tree of :class:`Node` objects whose keys match case-insensitively, as ASP.NET's
configuration does; values are still JSON scalars or environment strings, not yet checked or converted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.config.errors import ConfigError


class Node:
    """One JSON object or list after merging; keys are matched case-insensitively, as ASP.NET does.

    ``entries`` maps the case-folded key to ``(spelling, value)``; list items use keys ``"0"``, ``"1"``...
    Values are nested nodes or JSON scalars (``str``, ``int``, ``float``, ``bool``, ``None``).
    """

    __slots__ = ("entries", "is_array")

    def __init__(self, *, is_array: bool = False) -> None:
        self.entries: dict[str, tuple[str, Any]] = {}
        self.is_array = is_array


class EnvValue(str):
    """A string that came from an environment variable, so messages can name the variable."""

    variable: str

    def __new__(cls, value: str, variable: str) -> EnvValue:
        self = super().__new__(cls, value)
        self.variable = variable
        return self


class TreeError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object's members in file order, duplicates kept, so they can be reported with their path."""


def read_file(path: str) -> Node:
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found; pass the path of appsettings.json"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot be read ({exc})"]) from None
    return _node_from_json_text(text, source=path)


def _node_from_json_text(text: str, *, source: str) -> Node:
    try:
        parsed = json.loads(_strip_comments(text), object_pairs_hook=_Pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise TreeError([f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]) from None
    except ValueError as exc:
        raise TreeError([f"{source}: not valid JSON: {exc}"]) from None
    if not isinstance(parsed, _Pairs):
        raise TreeError([f"{source}: the file must hold one JSON object ({{ ... }})"])
    return node_from_mapping(parsed)


def node_from_mapping(data: Mapping[str, Any] | _Pairs) -> Node:
    problems: list[str] = []
    node = _convert(data, "", problems)
    if problems:
        raise TreeError(problems)
    assert isinstance(node, Node)
    return node


def _convert(value: Any, path: str, problems: list[str]) -> Any:
    if isinstance(value, (_Pairs, Mapping)):
        node = Node()
        pairs = value if isinstance(value, _Pairs) else list(value.items())
        for key, item in pairs:
            key = str(key)
            child = f"{path}.{key}" if path else key
            folded = key.casefold()
            if folded in node.entries:
                # ASP.NET refuses such a file too: its keys are case-insensitive.
                problems.append(f"{child}: given twice (keys are case-insensitive: {node.entries[folded][0]!r} and {key!r}); keep one")
                continue
            node.entries[folded] = (key, _convert(item, child, problems))
        return node
    if isinstance(value, (list, tuple)):
        node = Node(is_array=True)
        for index, item in enumerate(value):
            node.entries[str(index)] = (str(index), _convert(item, f"{path}[{index}]", problems))
        return node
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _strip_comments(text: str) -> str:
    """Blank out comments and trailing commas, keeping every line and column where it was."""
    out = list(text)
    i, n = 0, len(text)
    last_comma = -1  # index of a comma that may turn out to be trailing
    while i < n:
        ch = text[i]
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            last_comma = -1
            continue
        if ch == "/" and i + 1 < n and text[i + 1] in "/*":
            end = text.find("\n", i) if text[i + 1] == "/" else text.find("*/", i + 2)
            end = n if end < 0 else (end if text[i + 1] == "/" else end + 2)
            for j in range(i, end):
                if out[j] != "\n":
                    out[j] = " "
            i = end
            continue
        if ch == ",":
            last_comma = i
        elif ch in "}]" and last_comma >= 0:
            out[last_comma] = " "
            last_comma = -1
        elif not ch.isspace():
            last_comma = -1
        i += 1
    return "".join(out)


def apply_environment(root: Node, environ: Mapping[str, str], top_level: tuple[str, ...]) -> list[str]:
    """Overlay ``Section__Key__0`` variables on the tree, as ASP.NET's environment provider does.

    :return: warnings about variables that could not be applied.
    """
    warnings: list[str] = []
    known = {name.casefold() for name in top_level}
    for variable in sorted(environ):
        segments = variable.replace("__", ":").split(":")
        if segments[0].casefold() not in known or any(not segment for segment in segments):
            continue
        node = root
        for segment in segments[:-1]:
            folded = segment.casefold()
            entry = node.entries.get(folded)
            if entry is None or not isinstance(entry[1], Node):
                child = Node()
                node.entries[folded] = (entry[0] if entry else segment, child)
                node = child
            else:
                node = entry[1]
        last = segments[-1]
        entry = node.entries.get(last.casefold())
        if entry is not None and isinstance(entry[1], Node):
            # ASP.NET keeps a section's own value beside its children and never binds it; say so instead.
            warnings.append(f"{variable}: sets a value on the section {entry[0]!r}, which has keys of its own; ignored")
            continue
        node.entries[last.casefold()] = (entry[0] if entry else last, EnvValue(environ[variable], variable))
    return warnings

