"""Client proxies for sending from hubs (``self.clients``) and from outside them (:class:`HubContext`).

Every send goes through the lifetime manager, so the same code works in memory and across servers
on a Redis backplane. Example from anywhere in the application::

    await context.clients.group("room").send("GroupMessage", "room", "hello")
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signalr.hubs.lifetime import HubLifetimeManager


class ClientProxy:
    """A set of recipients; :meth:`send` invokes a client method on all of them."""

    def __init__(self, deliver: Callable[[str, tuple[Any, ...]], Awaitable[None]]) -> None:
        self._deliver = deliver

    async def send(self, method: str, *args: Any) -> None:
        """Invoke ``method(*args)`` on every recipient (fire-and-forget, no result).

        :param method: client-side handler name, sent verbatim (JS matches case-insensitively,
            other clients exactly).
        """
        await self._deliver(method, args)


class HubClients:
    """Recipient selectors usable from anywhere (no notion of a caller)."""

    def __init__(self, lifetime: HubLifetimeManager) -> None:
        self._lifetime = lifetime

    @property
    def all(self) -> ClientProxy:
        """Every connection of the hub."""
        return ClientProxy(lambda m, a: self._lifetime.send_all(m, a))

    def all_except(self, connection_ids: Iterable[str]) -> ClientProxy:
        """Every connection except ``connection_ids``."""
        excluded = tuple(connection_ids)
        return ClientProxy(lambda m, a: self._lifetime.send_all(m, a, exclude=excluded))

    except_ = all_except

    def client(self, connection_id: str) -> ClientProxy:
        """One connection by its public id."""
        return ClientProxy(lambda m, a: self._lifetime.send_connection(connection_id, m, a))

    def clients(self, connection_ids: Iterable[str]) -> ClientProxy:
        """Several connections by public id."""
        ids = tuple(connection_ids)
        return ClientProxy(lambda m, a: self._lifetime.send_connections(ids, m, a))

    def group(self, name: str) -> ClientProxy:
        """Members of group ``name`` (case-sensitive)."""
        return ClientProxy(lambda m, a: self._lifetime.send_group(name, m, a))

    def group_except(self, name: str, connection_ids: Iterable[str]) -> ClientProxy:
        """Members of ``name`` except ``connection_ids``."""
        excluded = tuple(connection_ids)
        return ClientProxy(lambda m, a: self._lifetime.send_group(name, m, a, exclude=excluded))

    def groups(self, names: Iterable[str]) -> ClientProxy:
        """Members of any of ``names`` (each connection gets the message once)."""
        group_names = tuple(names)
        return ClientProxy(lambda m, a: self._lifetime.send_groups(group_names, m, a))


class HubCallerClients(HubClients):
    """``self.clients`` inside a hub method: adds the caller-relative selectors."""

    def __init__(self, lifetime: HubLifetimeManager, connection_id: str) -> None:
        super().__init__(lifetime)
        self._connection_id = connection_id

    @property
    def caller(self) -> ClientProxy:
        """The connection that invoked the method."""
        return self.client(self._connection_id)

    @property
    def others(self) -> ClientProxy:
        """Everyone but the caller."""
        return self.all_except((self._connection_id,))

    def others_in_group(self, name: str) -> ClientProxy:
        """Members of ``name`` except the caller."""
        return self.group_except(name, (self._connection_id,))


class GroupManager:
    """Group membership (``self.groups`` / ``context.groups``); works for remote connections too."""

    def __init__(self, lifetime: HubLifetimeManager) -> None:
        self._lifetime = lifetime

    async def add(self, connection_id: str, group: str) -> None:
        """Add a connection to ``group`` (idempotent).

        :raises ValueError: ``group`` is not a non-empty string with a UTF-8 form.
        """
        await self._lifetime.add_to_group(connection_id, _group_name(group))

    async def remove(self, connection_id: str, group: str) -> None:
        """Remove a connection from ``group`` (idempotent).

        :raises ValueError: ``group`` is not a non-empty string with a UTF-8 form.
        """
        await self._lifetime.remove_from_group(connection_id, _group_name(group))


def _group_name(group: object) -> str:
    """``group`` when a backplane can name a channel after it, else ValueError before any state changes
    (a lone surrogate from a JSON ``\\ud800`` would fail half-way through a subscription change)."""
    if not isinstance(group, str) or not group:
        raise ValueError(f"a group name must be a non-empty string, not {group!r}")
    try:
        group.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"the group name {group!r} has no UTF-8 form (it holds a lone surrogate)") from None
    return group


class HubContext:
    """Send to a hub's clients from outside a hub method (background tasks, HTTP handlers).

    :param lifetime: the lifetime manager the hub endpoint uses.
    """

    def __init__(self, lifetime: HubLifetimeManager) -> None:
        self.clients = HubClients(lifetime)
        self.groups = GroupManager(lifetime)
