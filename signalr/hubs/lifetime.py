"""Hub lifetime managers: who is connected, who is in which group, and delivery to them.

The hub layer talks to one :class:`HubLifetimeManager`. :class:`InMemoryHubLifetimeManager` serves a
single process; :class:`signalr.redis.lifetime.RedisHubLifetimeManager` spreads the same operations
over several processes. Both keep local state in a :class:`LocalConnections` registry, whose fan-out
loops are synchronous: a connection's ``send_serialized`` only enqueues, so a broadcast to thousands of
connections never yields to the event loop per connection.

Group semantics follow ASP.NET Core: names are compared case-sensitively, add/remove are idempotent,
adding an unknown connection is a no-op, and a connection leaves every group when it disconnects.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Protocol

from signalr.errors import SignalRError
from signalr.protocol import HubMessage, HubProtocol, InvocationMessage

__all__ = [
    "GroupActionError",
    "HubConnectionSink",
    "HubLifetimeManager",
    "InMemoryHubLifetimeManager",
    "LocalConnections",
    "SerializedMessage",
    "invocation",
]

logger = logging.getLogger("signalr.lifetime")

_NOTHING_EXCLUDED: frozenset[str] = frozenset()


class GroupActionError(SignalRError):
    """A group add/remove for a connection on another server could not be confirmed.

    Raised when no server acknowledged the command in time (the connection is unknown everywhere, or its
    server cannot reach the backplane) or when the backplane itself is unreachable.
    """


class SerializedMessage:
    """A hub message plus its encoded bytes, computed at most once per protocol name.

    One instance is shared by every recipient of a broadcast, so 5,000 JSON connections cost one JSON
    encoding, not 5,000.

    :param message: the hub message to deliver.
    """

    __slots__ = ("message", "_encoded")

    def __init__(self, message: HubMessage) -> None:
        self.message = message
        self._encoded: dict[str, bytes] = {}

    def bytes_for(self, protocol: HubProtocol) -> bytes:
        """Return the framed bytes of the message in ``protocol``, encoding only on first request."""
        encoded = self._encoded.get(protocol.name)
        if encoded is None:
            encoded = protocol.write_message(self.message)
            self._encoded[protocol.name] = encoded
        return encoded


class HubConnectionSink(Protocol):
    """What a lifetime manager needs from a connection: its id and a non-blocking enqueue."""

    connection_id: str

    def send_serialized(self, message: SerializedMessage) -> None:
        """Queue ``message`` for the client; must not block and should not raise."""


def invocation(method: str, args: Sequence[Any]) -> SerializedMessage:
    """Build the shared, lazily serialized invocation of client method ``method``."""
    return SerializedMessage(
        InvocationMessage(target=method, arguments=args if isinstance(args, tuple) else tuple(args))
    )


def id_collection(value: Collection[str], name: str) -> Collection[str]:
    """Reject a bare string where a collection of ids or names is expected.

    ``send_groups("room", …)`` would otherwise address the groups "r", "o" and "m" without a word.
    """
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a collection of strings, not a single {type(value).__name__}")
    return value


def exclusion_set(exclude: Collection[str]) -> Collection[str]:
    """Return ``exclude`` in a form with O(1) membership tests, without copying a set."""
    if not exclude:
        return _NOTHING_EXCLUDED
    if isinstance(exclude, (set, frozenset)):
        return exclude
    return frozenset(id_collection(exclude, "exclude"))


def _fan_out(sinks: Iterable[HubConnectionSink], message: SerializedMessage, exclude: Collection[str]) -> None:
    # The hot loop of every broadcast: no awaits, one membership test, and a per-connection guard so
    # one broken connection cannot stop delivery to the rest.
    for sink in sinks:
        if exclude and sink.connection_id in exclude:
            continue
        try:
            sink.send_serialized(message)
        except Exception:
            logger.exception("Failed to send a message to connection %s", sink.connection_id)


class LocalConnections:
    """Connections and group memberships hosted by this process.

    Membership is kept both ways (group → members, connection → groups) so that a disconnect leaves
    every group without scanning them all.
    """

    __slots__ = ("_connections", "_groups", "_memberships")

    def __init__(self) -> None:
        self._connections: dict[str, HubConnectionSink] = {}
        self._groups: dict[str, dict[str, HubConnectionSink]] = {}
        self._memberships: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._connections)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._connections

    def get(self, connection_id: str) -> HubConnectionSink | None:
        """Return the local connection with this id, or ``None``."""
        return self._connections.get(connection_id)

    def connection_ids(self) -> list[str]:
        """Ids of every local connection (a snapshot)."""
        return list(self._connections)

    def group_names(self) -> list[str]:
        """Names of the groups with at least one local member (a snapshot)."""
        return list(self._groups)

    def has_group(self, group: str) -> bool:
        """Whether ``group`` has at least one local member."""
        return group in self._groups

    def is_member(self, connection_id: str, group: str) -> bool:
        """Whether local connection ``connection_id`` is in ``group``."""
        members = self._groups.get(group)
        return members is not None and connection_id in members

    def add(self, connection: HubConnectionSink) -> None:
        """Register a newly connected local connection."""
        self._connections[connection.connection_id] = connection
        self._memberships.setdefault(connection.connection_id, set())

    def remove(self, connection_id: str) -> list[str]:
        """Forget a connection and its memberships; return the groups left without local members."""
        self._connections.pop(connection_id, None)
        emptied = []
        for group in self._memberships.pop(connection_id, ()):
            members = self._groups.get(group)
            if members is None:
                continue
            members.pop(connection_id, None)
            if not members:
                del self._groups[group]
                emptied.append(group)
        return emptied

    def join(self, connection_id: str, group: str) -> bool:
        """Put a local connection in ``group``; return True if the group just got its first local member.

        An unknown connection is ignored, which also covers an add racing with a disconnect.
        """
        connection = self._connections.get(connection_id)
        if connection is None:
            return False
        members = self._groups.get(group)
        first = members is None
        if first:
            members = self._groups[group] = {}
        members[connection_id] = connection
        self._memberships[connection_id].add(group)
        return first

    def leave(self, connection_id: str, group: str) -> bool:
        """Take a local connection out of ``group``; return True if the group has no local member left."""
        groups = self._memberships.get(connection_id)
        if groups is not None:
            groups.discard(group)
        members = self._groups.get(group)
        if members is None or connection_id not in members:
            return False
        del members[connection_id]
        if members:
            return False
        del self._groups[group]
        return True

    def deliver_all(self, message: SerializedMessage, exclude: Collection[str] = _NOTHING_EXCLUDED) -> None:
        """Send to every local connection not in ``exclude``."""
        _fan_out(tuple(self._connections.values()), message, exclude)

    def deliver_group(
        self,
        group: str,
        message: SerializedMessage,
        exclude: Collection[str] = _NOTHING_EXCLUDED,
    ) -> None:
        """Send to the local members of ``group`` not in ``exclude``."""
        members = self._groups.get(group)
        if members:
            _fan_out(tuple(members.values()), message, exclude)

    def deliver_groups(self, groups: Sequence[str], message: SerializedMessage, *, only: str | None = None) -> None:
        """Send once to each local connection that is in any of ``groups``.

        With ``only``, deliver just the share owed for that one group: its members that are not also in a
        group listed before it. A remote ``send_groups`` arrives once per group channel, and this rule
        makes a connection in several of those groups receive it exactly once.
        """
        if only is not None:
            members = self._groups.get(only)
            if not members:
                return
            earlier = groups[: groups.index(only)] if only in groups else ()
            if earlier:
                memberships = self._memberships
                targets = [
                    sink for cid, sink in members.items() if memberships.get(cid, _NOTHING_EXCLUDED).isdisjoint(earlier)
                ]
            else:
                targets = list(members.values())
            _fan_out(targets, message, _NOTHING_EXCLUDED)
            return
        seen: dict[str, HubConnectionSink] = {}
        for group in groups:
            members = self._groups.get(group)
            if members:
                seen.update(members)
        _fan_out(tuple(seen.values()), message, _NOTHING_EXCLUDED)

    def deliver_to(self, connection_ids: Iterable[str], message: SerializedMessage) -> None:
        """Send to each listed connection that is local; unknown ids are skipped."""
        connections = self._connections
        _fan_out([c for c in map(connections.get, connection_ids) if c is not None], message, _NOTHING_EXCLUDED)


class HubLifetimeManager(ABC):
    """Tracks connections and groups of one hub and delivers invocations to them.

    Every ``send_*`` method serializes the invocation once per hub protocol in use and never raises
    because one connection is broken. ``send_*`` never fails because a backplane is unreachable either:
    such failures are logged.
    """

    async def start(self) -> None:  # noqa: B027 - optional hook; the in-memory manager needs nothing
        """Acquire resources (backplane connections); call once before use."""

    async def close(self) -> None:  # noqa: B027
        """Release resources; the manager must not be used afterwards."""

    def on_resubscribed(self, callback: Callable[[], None]) -> None:  # noqa: B027 - nothing is ever missed here
        """Call ``callback`` each time a backplane is subscribed again after losing its connection.

        A backplane's pub/sub delivers at most once: what other servers sent while the subscription was
        down is gone, so a hub that promised its clients something resends it from its own state then.
        A manager without a backplane never misses anything and never calls it.
        """

    @abstractmethod
    async def on_connected(self, connection: HubConnectionSink) -> None:
        """Register a connection that completed its handshake."""

    @abstractmethod
    async def on_disconnected(self, connection: HubConnectionSink) -> None:
        """Forget a connection; it also leaves all its groups."""

    @abstractmethod
    async def send_all(self, method: str, args: Sequence[Any], exclude: Collection[str] = ()) -> None:
        """Invoke ``method`` on every connection except those in ``exclude``."""

    @abstractmethod
    async def send_connection(self, connection_id: str, method: str, args: Sequence[Any]) -> None:
        """Invoke ``method`` on one connection, wherever it lives."""

    @abstractmethod
    async def send_connections(self, connection_ids: Collection[str], method: str, args: Sequence[Any]) -> None:
        """Invoke ``method`` on each of the given connections."""

    @abstractmethod
    async def send_group(self, group: str, method: str, args: Sequence[Any], exclude: Collection[str] = ()) -> None:
        """Invoke ``method`` on every member of ``group`` except those in ``exclude``."""

    @abstractmethod
    async def send_groups(self, groups: Collection[str], method: str, args: Sequence[Any]) -> None:
        """Invoke ``method`` once on every connection that is in at least one of ``groups``."""

    @abstractmethod
    async def add_to_group(self, connection_id: str, group: str) -> None:
        """Add a connection (local or, with a backplane, remote) to ``group``; idempotent."""

    @abstractmethod
    async def remove_from_group(self, connection_id: str, group: str) -> None:
        """Remove a connection from ``group``; idempotent."""

    @abstractmethod
    def local_connection(self, connection_id: str) -> HubConnectionSink | None:
        """Return the connection with this id if it is hosted by this process."""


class InMemoryHubLifetimeManager(HubLifetimeManager):
    """The single-process lifetime manager (ASP.NET's ``DefaultHubLifetimeManager``)."""

    def __init__(self) -> None:
        self._local = LocalConnections()

    async def on_connected(self, connection: HubConnectionSink) -> None:
        self._local.add(connection)

    async def on_disconnected(self, connection: HubConnectionSink) -> None:
        self._local.remove(connection.connection_id)

    async def send_all(self, method: str, args: Sequence[Any], exclude: Collection[str] = ()) -> None:
        self._local.deliver_all(invocation(method, args), exclusion_set(exclude))

    async def send_connection(self, connection_id: str, method: str, args: Sequence[Any]) -> None:
        self._local.deliver_to((connection_id,), invocation(method, args))

    async def send_connections(self, connection_ids: Collection[str], method: str, args: Sequence[Any]) -> None:
        self._local.deliver_to(dict.fromkeys(id_collection(connection_ids, "connection_ids")), invocation(method, args))

    async def send_group(self, group: str, method: str, args: Sequence[Any], exclude: Collection[str] = ()) -> None:
        self._local.deliver_group(group, invocation(method, args), exclusion_set(exclude))

    async def send_groups(self, groups: Collection[str], method: str, args: Sequence[Any]) -> None:
        self._local.deliver_groups(list(dict.fromkeys(id_collection(groups, "groups"))), invocation(method, args))

    async def add_to_group(self, connection_id: str, group: str) -> None:
        self._local.join(connection_id, group)

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        self._local.leave(connection_id, group)

    def local_connection(self, connection_id: str) -> HubConnectionSink | None:
        return self._local.get(connection_id)
