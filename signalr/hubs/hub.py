"""The :class:`Hub` base class, its method table and argument binding.

Client targets are matched like ASP.NET: exact name first, then case-insensitively. A Python
method ``join_group`` is also reachable as ``JoinGroup``; :func:`hub_method` sets an explicit name.
"""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import types
import typing
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from signalr.errors import SignalRError

if TYPE_CHECKING:
    from signalr.hubs.clients import GroupManager, HubCallerClients
    from signalr.connections.connection import RequestInfo

F = TypeVar("F", bound=Callable[..., Any])

_NAME_ATTR = "__signalr_name__"
_STREAM_ORIGINS = (collections.abc.AsyncIterator, collections.abc.AsyncIterable)


class HubError(SignalRError):
    """Raise from a hub method to send its text to the caller (.NET ``HubException``)."""


class BindingError(Exception):
    """Arguments from the client do not fit the method; the detail is shown only in debug mode."""


def hub_method(name: str | F | None = None) -> Any:
    """Expose a hub method under an explicit client-visible name.

    Usable as ``@hub_method("SendMessage")`` or bare ``@hub_method`` (public methods are exposed
    anyway; the bare form only documents intent).
    """
    if callable(name):
        return name

    def decorate(func: F) -> F:
        setattr(func, _NAME_ATTR, name)
        return func

    return decorate


def pascal_case(name: str) -> str:
    """``join_group`` → ``JoinGroup`` (the casing .NET clients use)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


@dataclass(slots=True, kw_only=True)
class HubCallerContext:
    """Per-connection context available to hub methods as ``self.context``.

    :param connection_id: the public connection id.
    :param user: what the server's ``user_provider`` returned for this connection (or ``None``).
    :param items: free per-connection storage that lives as long as the connection.
    :param request: headers, remote address, query and access token of the starting request.
    """

    connection_id: str
    user: Any = None
    items: dict[str, Any] = field(default_factory=dict)
    request: RequestInfo | None = None
    abort: Callable[[], None] = lambda: None

    @property
    def headers(self) -> typing.Mapping[str, str]:
        return self.request.headers if self.request is not None else {}

    @property
    def remote_ip(self) -> str | None:
        return self.request.remote_ip if self.request is not None else None


class Hub:
    """Base class for hubs. Public methods (sync, async, or async generators) are callable.

    A new instance serves each invocation, as in ASP.NET; keep per-connection state in
    ``self.context.items`` and shared state outside the hub.
    """

    context: HubCallerContext
    clients: HubCallerClients
    groups: GroupManager

    async def on_connected(self) -> None:
        """Called once the handshake succeeded."""

    async def on_disconnected(self, exception: BaseException | None) -> None:
        """Called when the connection ended (``exception`` is set when it ended with an error)."""


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
            explicit = getattr(func, _NAME_ATTR, None)
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


class UploadStream(AsyncIterator[Any]):
    """A client-to-server stream handed to a hub method as an async iterator.

    Bounded like ASP.NET's ``StreamBufferCapacity``: the reader loop waits when the method lags.
    """

    def __init__(self, capacity: int) -> None:
        self._items: deque[Any] = deque()
        self._capacity = capacity
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._error: str | None = None
        self.completed = False

    def offer(self, item: Any) -> bool:
        """Add ``item`` unless the buffer is full (then :meth:`put` must wait); True when done."""
        if len(self._items) >= self._capacity and not self.completed:
            return False
        if not self.completed:
            self._items.append(item)
            self._readable.set()
        return True

    async def put(self, item: Any) -> None:
        while len(self._items) >= self._capacity and not self.completed:
            self._writable.clear()
            await self._writable.wait()
        if not self.completed:
            self._items.append(item)
            self._readable.set()

    def complete(self, error: str | None = None) -> None:
        """End the stream; ``error`` makes the reader raise :class:`HubError` after the items."""
        if not self.completed:
            self.completed = True
            self._error = error
            self._readable.set()
            self._writable.set()

    def __aiter__(self) -> UploadStream:
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self.completed:
                if self._error is not None:
                    raise HubError(self._error)
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._writable.set()
        return item


# Client-visible error texts (reference §7.2); .NET clients and tests compare them verbatim.


def _detail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def unknown_method_error(target: str) -> str:
    """Completion error for a target no method matches."""
    return f"Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist."


def binding_error(target: str, exc: BindingError, *, detailed: bool) -> str:
    """Completion error when the arguments do not bind."""
    text = f"Failed to invoke '{target}' due to an error on the server."
    return f"{text} InvalidDataException: {exc}" if detailed else text


def invocation_error(target: str, exc: BaseException, *, detailed: bool) -> str:
    """Completion error when the method raised; a :class:`HubError` text is always forwarded."""
    text = f"An unexpected error occurred invoking '{target}' on the server."
    if isinstance(exc, HubError):
        return f"{text} HubException: {exc}"
    return f"{text} {_detail(exc)}" if detailed else text


def stream_error(exc: BaseException, *, detailed: bool) -> str:
    """Completion error when a server-to-client stream raised."""
    text = "An error occurred on the server while streaming results."
    if isinstance(exc, HubError):
        return f"{text} HubException: {exc}"
    return f"{text} {_detail(exc)}" if detailed else text


def stream_count_error(target: str, sent: int, expected: int) -> str:
    """Completion error when the number of ``streamIds`` differs from the stream parameters."""
    return (
        f"An unexpected error occurred invoking '{target}' on the server. "
        f"HubException: Client sent {sent} stream(s), Hub method expects {expected}."
    )


def streaming_kind_error(target: str, *, method_is_streaming: bool) -> str:
    """Completion error when the invocation kind does not match the method kind."""
    if method_is_streaming:
        return f"The client attempted to invoke the streaming '{target}' method with a non-streaming invocation."
    return f"The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."


def duplicate_invocation_error(invocation_id: str) -> str:
    """Completion error for a StreamInvocation whose id is already running."""
    return f"Invocation ID '{invocation_id}' is already in use."


CONNECTION_ERROR = "Connection closed with an error."
