"""WebSockets transport: a writer that drains the connection's outbox into WebSocket messages.

JSON goes out in text frames and MessagePack in binary frames; a JS client in text mode cannot read
binary frames. Each drained batch holds only complete messages, so one WebSocket message never
carries half a hub message.
"""

from __future__ import annotations

import logging
from typing import Protocol

from signalr.connections.connection import HttpConnection

log = logging.getLogger("signalr.transport")

CLOSE_NORMAL = 1000
CLOSE_INTERNAL_ERROR = 1011


class WebSocketPeer(Protocol):
    """The adapter's view of an accepted WebSocket."""

    def send(self, data: bytes, *, binary: bool) -> None:
        """Queue one WebSocket message without waiting for it to be flushed; raises if the socket is gone."""

    def close(self, code: int) -> None:
        """Start the closing handshake."""


async def run_writer(connection: HttpConnection, peer: WebSocketPeer, serial: int) -> None:
    """Drain ``connection.outbox`` into ``peer`` until the application closes the outbox.

    Stops quietly when a newer attachment (stateful reconnect) replaced this one.

    :param serial: the attachment serial returned by :meth:`HttpConnection.activate`.
    """
    code = CLOSE_NORMAL
    outbox = connection.outbox

    def direct(data: bytes, binary: bool) -> None:
        if not connection.is_current(serial):
            raise RuntimeError("superseded")
        peer.send(data, binary=binary)

    try:
        while connection.is_current(serial) or connection.disposed:
            batch = await connection.outbox.next_batch()
            if batch is None:
                break
            if not connection.is_current(serial) and not connection.disposed:
                # Superseded while waiting: leave the frames to the stateful replay.
                return
            for frame in batch:
                # Bytes go out as a text frame when binary is False: no decode/re-encode round trip.
                peer.send(frame.data, binary=frame.binary)
            if connection.is_current(serial):
                outbox.direct = direct
    except Exception as exc:  # noqa: BLE001 - any write failure ends just this connection
        log.debug("websocket write failed for %s: %r", connection.connection_id, exc)
        code = CLOSE_INTERNAL_ERROR
    finally:
        if outbox.direct is direct:
            outbox.direct = None
    peer.close(code)
