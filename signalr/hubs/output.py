"""The outgoing half of one hub connection: encoding, stateful-reconnect numbering, and holding
senders back while the replay buffer is full.

Everything the hub sends its client (Completions, stream items, broadcasts, Pings, Acks, Close)
goes through one :class:`HubOutput` onto the connection's outbox, which every transport drains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from signalr.connections.outbox import Outbox
from signalr.protocol import HubMessage, HubProtocol, SequenceMessage, TransferFormat, is_trackable
from signalr.protocol.stateful import StatefulBuffer


class _Unbounded:
    """The room of an output without a replay buffer: always there, so no asyncio.Event (and its
    deque, most of a KiB) per connection for a wait that never happens."""

    __slots__ = ()

    def is_set(self) -> bool:
        return True

    def set(self) -> None:
        pass

    async def wait(self) -> bool:
        return True


_UNBOUNDED = _Unbounded()


class HubOutput:
    """Writes hub messages for one client in the protocol its handshake chose.

    :param outbox: the connection's outbound frame queue.
    :param protocol: the negotiated hub protocol.
    :param stateful: the replay buffer when the client uses stateful reconnect, else ``None``.
    """

    __slots__ = ("protocol", "stateful", "binary", "room", "closing", "_outbox")

    def __init__(self, outbox: Outbox, protocol: HubProtocol, stateful: StatefulBuffer | None) -> None:
        self.protocol = protocol
        self.stateful = stateful
        self.binary = protocol.transfer_format == TransferFormat.BINARY
        #: Set while the replay buffer has room (always without stateful reconnect): our own tasks
        #: wait for it before they send, so unacknowledged output stays bounded.
        self.room: asyncio.Event | _Unbounded = _UNBOUNDED
        if stateful is not None:
            self.room = asyncio.Event()
            self.room.set()
        #: True once the session is over: nothing more is written.
        self.closing = False
        self._outbox = outbox

    def put(self, data: bytes, *, tracked: bool) -> None:
        """Queue one encoded message; ``tracked`` ones are numbered and kept for replay."""
        stateful = self.stateful
        if stateful is not None and tracked:
            stateful.record_outgoing(data)
            if stateful.over_limit:
                self.room.clear()  # type: ignore[union-attr] - stateful: an asyncio.Event
        self._outbox.put(data, binary=self.binary)

    def write(self, message: HubMessage) -> None:
        """Encode and queue ``message`` now, whatever the replay buffer holds.

        :raises SerializationError: the message holds a value the protocol cannot encode.
        """
        self.put(self.protocol.write_message(message), tracked=is_trackable(message))

    async def send(self, message: HubMessage) -> None:
        """Send from our own tasks, waiting for Acks while the replay buffer is full."""
        while not self.room.is_set() and not self.closing:
            await self.room.wait()
        if not self.closing:
            self.write(message)

    def send_now(self, message: HubMessage) -> Awaitable[None] | None:
        """Write ``message`` at once unless the replay buffer is full; then return the wait for it."""
        if self.closing:
            return None
        if not self.room.is_set():
            return self.send(message)
        self.write(message)
        return None

    def acknowledge(self, sequence_id: int) -> None:
        """The client's Ack: forget what it has, and let waiting senders go on once there is room.

        :raises ProtocolError: it acknowledges more than was sent.
        """
        stateful = self.stateful
        if stateful is not None:
            stateful.ack(sequence_id)
            if not stateful.over_limit:
                self.room.set()

    def release(self) -> None:
        """Let every waiting sender go on: the connection ended, so no Ack will come to make room."""
        self.room.set()

    def replay(self) -> None:
        """A reconnecting WebSocket took over: Sequence first, then everything unacknowledged."""
        stateful = self.stateful
        assert stateful is not None
        self._outbox.clear()
        first, pending = stateful.replay()
        self._outbox.put(self.protocol.write_message(SequenceMessage(sequence_id=first)), binary=self.binary)
        for data in pending:
            self._outbox.put(data, binary=self.binary)

    def finish(self, message: HubMessage) -> None:
        """Replace whatever waits in the outbox with ``message`` as the last frame (a slow consumer's Close)."""
        self._outbox.finish(self.protocol.write_message(message), binary=self.binary)

    def close(self) -> None:
        """The session is over: write nothing more, release waiting senders, close the outbox."""
        self.closing = True
        self.room.set()
        self._outbox.close()
