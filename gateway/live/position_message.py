"""The ``QueuePositionUpdated`` message: its payload, and its JSON bytes formatted directly (a round
makes thousands of them)."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.live.estimates import estimate_wait_seconds
from signalr.hubs.lifetime import SerializedMessage
from signalr.protocol import HubProtocol, InvocationMessage

#: The client method that carries a new position.
POSITION_METHOD = "QueuePositionUpdated"


def update_payload(position: int, served_times: Sequence[float], now: float) -> dict[str, int | None]:
    """The ``QueuePositionUpdated`` argument."""
    return {"queuePosition": position, "estimatedWaitSeconds": estimate_wait_seconds(position, served_times, now=now)}


# What the JSON hub protocol writes for this invocation (a test holds the two byte for byte). One
# bytes-format per update instead of a dict, an envelope and a JSON encoder: a round makes thousands.
_JSON_FRAME = b'{"type":1,"target":"' + POSITION_METHOD.encode() + \
    b'","arguments":[{"queuePosition":%d,"estimatedWaitSeconds":%b}]}\x1e'


class PositionMessage(SerializedMessage):
    """A ``QueuePositionUpdated`` invocation whose JSON encoding is formatted directly.

    Other protocols (MessagePack) encode the same invocation the ordinary way; the invocation itself is
    only built for them (a round of 10,000 JSON updates builds none).

    :param position: 1-based queue position.
    :param estimated_wait_seconds: the estimate, or ``None`` while unknown.
    """

    __slots__ = ("_json", "_position", "_wait")

    def __init__(self, position: int, estimated_wait_seconds: int | None) -> None:  # noqa: PLW0231
        # (SerializedMessage.__init__ would build the invocation now: see ``message``.)
        self._position = position
        self._wait = estimated_wait_seconds
        wait = b"null" if estimated_wait_seconds is None else b"%d" % estimated_wait_seconds
        self._json = _JSON_FRAME % (position, wait)

    @property  # type: ignore[override]
    def message(self) -> InvocationMessage:
        return InvocationMessage(target=POSITION_METHOD, arguments=(
            {"queuePosition": self._position, "estimatedWaitSeconds": self._wait},))

    def bytes_for(self, protocol: HubProtocol) -> bytes:
        if protocol.name == "json":
            return self._json
        return protocol.write_message(self.message)


def position_message(position: int, estimated_wait_seconds: int | None) -> SerializedMessage:
    """The encoded ``QueuePositionUpdated`` for one request, shared by all its connections."""
    return PositionMessage(position, estimated_wait_seconds)
