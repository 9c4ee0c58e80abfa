"""The :class:`Hub` base class, what a hub method sees of its caller, and the activator that builds a
hub for each call.

Write a subclass; its public methods are what clients may invoke (:mod:`.methods` describes them).
:func:`hub_method` exposes one under an explicit name.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from signalr.errors import SignalRError
from signalr.hubs.clients import GroupManager, HubCallerClients

if TYPE_CHECKING:
    from signalr.connections.connection import RequestInfo
    from signalr.hubs.lifetime import HubLifetimeManager

F = TypeVar("F", bound=Callable[..., Any])


class ConnectionDetails(typing.Protocol):
    """What a connection tells its context about how it is carried (its hub session implements it)."""

    @property
    def transport_name(self) -> str | None: ...

    @property
    def protocol_name(self) -> str | None: ...

#: Where :func:`hub_method` records an explicit client-visible name (read by :mod:`.methods`).
NAME_ATTR = "__signalr_name__"


class HubError(SignalRError):
    """Raise from a hub method to send its text to the caller (.NET ``HubException``)."""


def hub_method(name: str | F | None = None) -> Any:
    """Expose a hub method under an explicit client-visible name.

    Usable as ``@hub_method("SendMessage")`` or bare ``@hub_method`` (public methods are exposed
    anyway; the bare form only documents intent).
    """
    if callable(name):
        return name

    def decorate(func: F) -> F:
        setattr(func, NAME_ATTR, name)
        return func

    return decorate


@dataclass(slots=True, kw_only=True)
class HubCallerContext:
    """Per-connection context available to hub methods as ``self.context``.

    :param connection_id: the public connection id.
    :param user: what the server's ``user_provider`` returned for this connection (or ``None``).
    :param items: free per-connection storage that lives as long as the connection.
    :param request: headers, remote address, query and access token of the starting request.
    :param details: where :attr:`transport` and :attr:`protocol` are read from (the hub session).
    """

    connection_id: str
    user: Any = None
    items: dict[str, Any] = field(default_factory=dict)
    request: RequestInfo | None = None
    abort: Callable[[], None] = lambda: None
    details: ConnectionDetails | None = field(default=None, repr=False)

    @property
    def transport(self) -> str | None:
        """The transport the connection rides on (``"WebSockets"``, ``"ServerSentEvents"``,
        ``"LongPolling"``, as in the negotiate payload); None when unknown."""
        return self.details.transport_name if self.details is not None else None

    @property
    def protocol(self) -> str | None:
        """The hub protocol the handshake chose (``"json"``, ``"messagepack"``); None before the handshake."""
        return self.details.protocol_name if self.details is not None else None

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


class HubActivator:
    """Builds the hub instance that serves one call of one connection (ASP.NET's ``IHubActivator``).

    A fresh instance per call, as in ASP.NET; every one shares the connection's context and client
    proxies, which hold no per-call state and are built once, on first use.

    :param hub_class: the hub type.
    :param context: the connection's :class:`HubCallerContext`.
    :param lifetime: the lifetime manager the proxies send through.
    """

    __slots__ = ("_hub_class", "_context", "_lifetime", "_clients", "_groups")

    def __init__(self, hub_class: type[Hub], context: HubCallerContext, lifetime: HubLifetimeManager) -> None:
        self._hub_class = hub_class
        self._context = context
        self._lifetime = lifetime
        self._clients: HubCallerClients | None = None
        self._groups: GroupManager | None = None

    def create(self) -> Hub:
        """A new hub instance, wired to the connection."""
        if self._clients is None:
            self._clients = HubCallerClients(self._lifetime, self._context.connection_id)
            self._groups = GroupManager(self._lifetime)
        hub = self._hub_class()
        hub.context = self._context
        hub.clients = self._clients
        hub.groups = self._groups  # type: ignore[assignment]
        return hub
