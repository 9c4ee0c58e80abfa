"""Stateful reconnect bookkeeping (Ack/Sequence), free of I/O.

Only Invocation, StreamItem, Completion, StreamInvocation and CancelInvocation are sequenced
(:func:`~signalr.protocol.messages.is_trackable`). Each side numbers its own outgoing ones 1, 2, 3 …
for the life of the logical connection; ids are implicit on the wire except inside Ack and Sequence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..errors import ProtocolError

ACK_INTERVAL = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Buffered:
    sequence_id: int
    data: bytes


class StatefulBuffer:
    """Unacknowledged outgoing messages plus the incoming duplicate filter.

    :param limit: bytes of unacknowledged output above which :attr:`over_limit` turns true.
    """

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._buffer: deque[_Buffered] = deque()
        self._buffered_bytes = 0
        self._sent = 0  # id of the last outgoing tracked message
        self._received = 0  # id given to the last incoming tracked message
        self._processed_high = 0  # highest incoming id processed (duplicates are below it)
        self._acked_received = 0  # highest incoming id we already acknowledged
        self._last_ack_at: float | None = None

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    @property
    def over_limit(self) -> bool:
        """True while senders should wait for an Ack before buffering more."""
        return self._buffered_bytes >= self._limit

    def record_outgoing(self, data: bytes) -> int:
        """Number and keep one serialized tracked message; returns its sequence id."""
        self._sent += 1
        self._buffer.append(_Buffered(sequence_id=self._sent, data=data))
        self._buffered_bytes += len(data)
        return self._sent

    def ack(self, sequence_id: int) -> None:
        """The peer processed everything up to ``sequence_id``: drop it from the buffer."""
        if sequence_id > self._sent:
            raise ProtocolError("Ack sequence ID greater than amount of messages sent.")
        while self._buffer and self._buffer[0].sequence_id <= sequence_id:
            self._buffered_bytes -= len(self._buffer.popleft().data)

    def replay(self) -> tuple[int, list[bytes]]:
        """What to send after a re-attach: the Sequence id, then the unacknowledged messages."""
        first = self._buffer[0].sequence_id if self._buffer else self._sent + 1
        return first, [item.data for item in self._buffer]

    def accept_incoming(self) -> bool:
        """Number one incoming tracked message; False means a replayed duplicate to drop."""
        self._received += 1
        if self._received <= self._processed_high:
            return False
        self._processed_high = self._received
        return True

    def sequence(self, sequence_id: int) -> None:
        """The peer restarts its numbering at ``sequence_id`` (after a re-attach)."""
        if sequence_id > self._processed_high + 1:
            raise ProtocolError("Sequence ID greater than amount of messages we've received.")
        self._received = sequence_id - 1

    def ack_due(self, now: float) -> int | None:
        """The id to Ack now, or ``None`` (nothing new, or acked less than a second ago)."""
        if self._processed_high <= self._acked_received:
            return None
        if self._last_ack_at is not None and now - self._last_ack_at < ACK_INTERVAL:
            return None
        self._last_ack_at = now
        self._acked_received = self._processed_high
        return self._processed_high
