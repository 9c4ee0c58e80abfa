"""A hub's method table: which client target names which method, and argument binding.

Client targets are matched like ASP.NET: exact name first, then case-insensitively. A Python
method ``join_group`` is also reachable as ``JoinGroup``; :func:`~signalr.hubs.hub.hub_method` sets an
explicit name.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from signalr.hubs.hub import NAME_ATTR, Hub

_STREAM_ORIGINS = (collections.abc.AsyncIterator, collections.abc.AsyncIterable)


class BindingError(Exception):
    """Arguments from the client do not fit the method; the detail is shown only in debug mode."""


def pascal_case(name: str) -> str:
    """``join_group`` → ``JoinGroup`` (the casing .NET clients use)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


_RESERVED = frozenset(name for name in dir(Hub) if not name.startswith("_")) | {"context", "clients", "groups"}


@dataclass(frozen=True, slots=True, kw_only=True)
class HubMethod:
    """One client-callable method and how to bind its arguments."""

    name: str
    attribute: str
    parameters: tuple[tuple[str, Any], ...]  # (name, type hint) of the wire arguments, in order
    stream_parameters: tuple[str, ...]  # names of client-to-server stream parameters
    parameter_order: tuple[str, ...]  # every bound parameter in signature order
    is_streaming: bool  # an async generator: a server-to-client stream
    is_sync: bool = False  # a plain function: it can run inline in the receive path
    typed: bool = True  # some wire parameter has a hint that needs checking

    def bind(self, arguments: typing.Sequence[Any]) -> list[Any]:
        """Check count and types of the wire arguments.

        :raises BindingError: with the .NET detail text.
        """
        if len(arguments) != len(self.parameters):
            raise BindingError(
                f"Invocation provides {len(arguments)} argument(s) but target expects {len(self.parameters)}."
            )
        if not self.typed:
            return list(arguments)
        for value, (_, hint) in zip(arguments, self.parameters, strict=True):
            if not _matches(value, hint):
                raise BindingError(
                    "Error binding arguments. Make sure that the types of the provided values match "
                    "the types of the hub method being invoked."
                )
        return list(arguments)


_UNCHECKED = (inspect.Parameter.empty, Any, object)


def _matches(value: Any, hint: Any) -> bool:
    """A deliberately small type check covering what JSON/MessagePack can carry."""
    if hint is inspect.Parameter.empty or hint is Any or hint is object:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    target = origin or hint
    if target is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if target is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if target in (list, tuple, collections.abc.Sequence):
        return isinstance(value, list | tuple)
    if target in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if isinstance(target, type):
        return isinstance(value, target)
    return True


class HubMethodTable:
    """Method lookup for one hub class: exact name, then case-insensitive fallback."""

    def __init__(self, hub_class: type[Hub]) -> None:
        self._exact: dict[str, HubMethod] = {}
        self._folded: dict[str, HubMethod] = {}
        for attribute, func in inspect.getmembers(hub_class, inspect.isfunction):
            explicit = getattr(func, NAME_ATTR, None)
            if explicit is None and (attribute.startswith("_") or attribute in _RESERVED):
                continue
            method = _describe(hub_class, attribute, func, explicit or attribute)
            names = {method.name} if explicit else {attribute, pascal_case(attribute)}
            for name in names:
                self._exact[name] = method
                folded = name.casefold()
                other = self._folded.get(folded)
                if other is not None and other.attribute != attribute:
                    raise ValueError(
                        f"hub {hub_class.__name__}: methods {other.attribute!r} and {attribute!r} differ only in case"
                    )
                self._folded[folded] = method

    def lookup(self, target: str) -> HubMethod | None:
        """The method a client ``target`` names, or ``None``."""
        return self._exact.get(target) or self._folded.get(target.casefold())


def _describe(hub_class: type[Hub], attribute: str, func: Callable[..., Any], name: str) -> HubMethod:
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - unresolved forward refs: fall back to no type checks
        hints = {}
    wire: list[tuple[str, Any]] = []
    streams: list[str] = []
    order: list[str] = []
    for parameter in list(inspect.signature(func).parameters.values())[1:]:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ValueError(f"hub method {hub_class.__name__}.{attribute} cannot take *args/**kwargs")
        hint = hints.get(parameter.name, inspect.Parameter.empty)
        order.append(parameter.name)
        if typing.get_origin(hint) in _STREAM_ORIGINS or hint in _STREAM_ORIGINS:
            streams.append(parameter.name)
        else:
            wire.append((parameter.name, hint))
    return HubMethod(
        name=name,
        attribute=attribute,
        parameters=tuple(wire),
        stream_parameters=tuple(streams),
        parameter_order=tuple(order),
        is_streaming=inspect.isasyncgenfunction(func),
        is_sync=not (inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)),
        typed=any(hint not in _UNCHECKED for _, hint in wire),
    )
