"""The hub protocols by handshake name: the one place that knows both encodings.

Kept apart from :mod:`.base` (which both encodings import) so that the registry imports them at the
top, with no import cycle.
"""

from __future__ import annotations

from .base import DEFAULT_MAX_MESSAGE_SIZE, HubProtocol
from .json_protocol import JsonHubProtocol
from .msgpack_protocol import MessagePackHubProtocol

__all__ = ["get_protocol", "protocol_names"]

#: Every protocol by its lower-case handshake name, in preference order.
_PROTOCOLS: dict[str, type[HubProtocol]] = {
    "json": JsonHubProtocol,
    "messagepack": MessagePackHubProtocol,
}


def protocol_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_protocol`, in preference order."""
    return tuple(_PROTOCOLS)


def get_protocol(name: str, *, max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE) -> HubProtocol | None:
    """A fresh protocol instance for a handshake protocol name.

    :param name: ``"json"`` or ``"messagepack"``, compared ignoring case like .NET's protocol resolver.
    :param max_message_size: see :class:`~signalr.protocol.base.HubProtocol`.
    :returns: the protocol, or ``None`` for an unknown name.
    """
    protocol = _PROTOCOLS.get(name.lower())
    return None if protocol is None else protocol(max_message_size=max_message_size)
