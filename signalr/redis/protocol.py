"""Wire format of the messages that cross processes over a scale-out backplane.

This module is sans-IO: it turns value objects into bytes and back and never touches Redis.

Every backplane message is one MessagePack **map** (string keys). Maps rather than positional arrays
so that a newer server can add fields that an older reader simply skips: readers look up the keys
they know and ignore every other key. Unlike ASP.NET's backplane, which ships the hub message
pre-serialized for every hub protocol, we ship the invocation's target and arguments as plain data
(JSON-able values: None, bool, int, float, str, list, str-keyed map). Each receiving process then
serializes once per hub protocol in use there, so the envelope does not depend on which protocols a
peer has enabled.

Channels (see :class:`BackplaneChannels`), all under ``{prefix}:{hub}``: ``:all``, ``:internal:groups`` and
``:internal:ack:{server id}``, and then, by the backplane's :class:`BackplaneLayout` (every server of one
backplane must use the same): ``:group:{name}`` and ``:connection:{id}`` (per target), or ``:groups`` and
``:connections`` (shared).

Invocation (published on ``…:all``, ``…:group:<g>``, ``…:connection:<id>``, ``…:groups`` and
``…:connections``)::

    {"origin": str,            # server id of the publisher; a server ignores its own messages
     "target": str,            # client method name
     "args": [any, …],         # invocation arguments
     "exclude": [str, …],      # optional: connection ids that must not receive it
     "groups": [str, …],       # optional: every group of one send_groups call, in order, so a
                               # connection in several of them receives the message only once;
                               # on ``…:groups``, the group(s) addressed
     "connections": [str, …]}  # on ``…:connections``: the connection ids addressed

Group command (published on ``…:internal:groups``)::

    {"id": int,                # per-origin sequence number echoed in the ack
     "origin": str,            # server id waiting for the ack
     "action": int,            # 1 = add, 2 = remove (GroupAction)
     "group": str,
     "connection": str}

Ack (published on ``…:internal:ack:<origin>``)::

    {"id": int}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import msgpack

from signalr.errors import SignalRError

__all__ = [
    "BackplaneChannels",
    "BackplaneLayout",
    "BackplaneProtocolError",
    "GroupAck",
    "GroupAction",
    "GroupCommand",
    "InvocationEnvelope",
    "decode_ack",
    "decode_group_command",
    "decode_invocation",
    "encode_ack",
    "encode_group_command",
    "encode_invocation",
]


class BackplaneProtocolError(SignalRError, ValueError):
    """A backplane message could not be encoded or decoded."""


class BackplaneLayout(StrEnum):
    """Which channels carry sends to groups and to single connections.

    ``PER_TARGET`` is ASP.NET Core's layout: a channel per connection and per group, which a server
    subscribes to while it hosts the connection or a member of the group. A message then reaches only
    the servers concerned, but every connect, disconnect and first join or last leave on a server is a
    ``SUBSCRIBE`` or ``UNSUBSCRIBE`` that Redis must confirm.

    ``SHARED``: one channel for every group send and one for every send to a connection elsewhere; each
    server subscribes to both once, reads every such message and delivers what concerns its own
    connections. Connects and joins then touch no Redis at all, and are effective at once; the price is
    that each server decodes each group send. It suits hubs with many short-lived connections and
    groups and few cross-server sends per second (a waiting queue: one outcome per served client).
    """

    PER_TARGET = "per-target"
    SHARED = "shared"


class GroupAction(IntEnum):
    """What a group command asks the owning server to do (values are on the wire)."""

    ADD = 1
    REMOVE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class InvocationEnvelope:
    """A client-method invocation travelling between servers.

    :param origin: server id of the publisher.
    :param target: name of the client method to invoke.
    :param arguments: the invocation arguments (JSON-able values).
    :param exclude: connection ids that must not receive the invocation.
    :param groups: all groups addressed by one ``send_groups`` call, in order; in the shared layout also
        the one group of a ``send_group`` (empty otherwise).
    :param connections: in the shared layout, the connections addressed (empty otherwise).
    """

    origin: str
    target: str
    arguments: tuple[Any, ...] = ()
    exclude: frozenset[str] = field(default_factory=frozenset)
    groups: tuple[str, ...] = ()
    connections: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupCommand:
    """Add or remove a connection that lives on another server to or from a group.

    :param id: sequence number chosen by the origin; echoed back in the :class:`GroupAck`.
    :param origin: server id that waits for the ack.
    :param action: add or remove.
    :param group: group name (compared case-sensitively).
    :param connection_id: the connection to move.
    """

    id: int
    origin: str
    action: GroupAction
    group: str
    connection_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupAck:
    """The owning server applied the group command with this id.

    :param id: the :attr:`GroupCommand.id` being acknowledged.
    """

    id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BackplaneChannels:
    """Every pub/sub channel name the backplane uses, in one place (part of the wire contract).

    :param prefix: isolates applications sharing one Redis.
    :param hub: isolates hubs of one application.
    """

    prefix: str
    hub: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{self.hub}"

    @property
    def all(self) -> str:
        return f"{self.base}:all"

    @property
    def internal_groups(self) -> str:
        return f"{self.base}:internal:groups"

    @property
    def group_prefix(self) -> str:
        return f"{self.base}:group:"

    @property
    def connection_prefix(self) -> str:
        return f"{self.base}:connection:"

    @property
    def groups(self) -> str:
        """The shared layout's one channel for group sends."""
        return f"{self.base}:groups"

    @property
    def connections(self) -> str:
        """The shared layout's one channel for sends to connections on other servers."""
        return f"{self.base}:connections"

    def group(self, name: str) -> str:
        return self.group_prefix + name

    def connection(self, connection_id: str) -> str:
        return self.connection_prefix + connection_id

    def ack(self, server_id: str) -> str:
        return f"{self.base}:internal:ack:{server_id}"


def _pack(payload: Mapping[str, Any], what: str) -> bytes:
    try:
        return msgpack.packb(payload, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BackplaneProtocolError(f"cannot encode {what} for the backplane: {exc}") from exc


def _unpack(data: bytes, what: str) -> Mapping[str, Any]:
    try:
        payload = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for corrupt input
        raise BackplaneProtocolError(f"{what} is not valid MessagePack: {str(exc) or type(exc).__name__}") from exc
    if not isinstance(payload, dict):
        raise BackplaneProtocolError(f"{what} must be a MessagePack map, got {type(payload).__name__}")
    return payload


def _require(payload: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in payload:
        raise BackplaneProtocolError(f"{what} lacks the required field {key!r}")
    value = payload[key]
    # bool is an int subclass; an id of True is a bug on the sender, not a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BackplaneProtocolError(f"{what} field {key!r} has the wrong type {type(value).__name__}")
    return value


def _string_list(payload: Mapping[str, Any], key: str, what: str) -> list[str]:
    value = payload.get(key, ())
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise BackplaneProtocolError(f"{what} field {key!r} must be a list of strings")
    return list(value)


def encode_invocation(envelope: InvocationEnvelope) -> bytes:
    """Encode an invocation envelope.

    :raises BackplaneProtocolError: when an argument cannot be represented (not JSON-able).
    """
    payload: dict[str, Any] = {
        "origin": envelope.origin,
        "target": envelope.target,
        "args": list(envelope.arguments),
    }
    if envelope.exclude:
        payload["exclude"] = sorted(envelope.exclude)
    if envelope.groups:
        payload["groups"] = list(envelope.groups)
    if envelope.connections:
        payload["connections"] = list(envelope.connections)
    return _pack(payload, f"invocation of {envelope.target!r}")


def decode_invocation(data: bytes) -> InvocationEnvelope:
    """Decode an invocation envelope, ignoring fields this version does not know.

    :raises BackplaneProtocolError: when required fields are missing or mistyped.
    """
    what = "backplane invocation"
    payload = _unpack(data, what)
    return InvocationEnvelope(
        origin=_require(payload, "origin", str, what),
        target=_require(payload, "target", str, what),
        arguments=tuple(_require(payload, "args", (list, tuple), what)),
        exclude=frozenset(_string_list(payload, "exclude", what)),
        groups=tuple(_string_list(payload, "groups", what)),
        connections=tuple(_string_list(payload, "connections", what)),
    )


def encode_group_command(command: GroupCommand) -> bytes:
    """Encode a group add/remove command."""
    return _pack(
        {
            "id": command.id,
            "origin": command.origin,
            "action": int(command.action),
            "group": command.group,
            "connection": command.connection_id,
        },
        "group command",
    )


def decode_group_command(data: bytes) -> GroupCommand:
    """Decode a group command, ignoring unknown fields.

    :raises BackplaneProtocolError: when required fields are missing or mistyped, or the action is unknown.
    """
    what = "backplane group command"
    payload = _unpack(data, what)
    raw_action = _require(payload, "action", int, what)
    try:
        action = GroupAction(raw_action)
    except ValueError:
        raise BackplaneProtocolError(f"{what} has unknown action {raw_action}") from None
    return GroupCommand(
        id=_require(payload, "id", int, what),
        origin=_require(payload, "origin", str, what),
        action=action,
        group=_require(payload, "group", str, what),
        connection_id=_require(payload, "connection", str, what),
    )


def encode_ack(ack: GroupAck) -> bytes:
    """Encode the acknowledgement of a group command."""
    return _pack({"id": ack.id}, "group ack")


def decode_ack(data: bytes) -> GroupAck:
    """Decode a group-command acknowledgement, ignoring unknown fields.

    :raises BackplaneProtocolError: when the id is missing or not an integer.
    """
    what = "backplane group ack"
    return GroupAck(id=_require(_unpack(data, what), "id", int, what))

