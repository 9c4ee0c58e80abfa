"""WebSockets transport: a writer that drains the connection's outbox into WebSocket messages.

JSON goes out in text frames and MessagePack in binary frames; a JS client in text mode cannot read
binary frames. Each drained batch holds only complete messages, so one WebSocket message never
carries half a hub message.
"""

from __future__ import annotations

import logging
from typing import Protocol

from signalr.connection import HttpConnection

log = logging.getLogger("signalr.transport")

CLOSE_NORMAL = 1000
CLOSE_INTERNAL_ERROR = 1011


class WebSocketPeer(Protocol):
    """The adapter's view of an accepted WebSocket."""

    async def send(self, data: bytes | str, *, binary: bool) -> None:
        """Send one WebSocket message; raises if the socket is gone."""

    def close(self, code: int) -> None:
        """Start the closing handshake."""


async def run_writer(connection: HttpConnection, peer: WebSocketPeer, serial: int) -> None:
    """Drain ``connection.outbox`` into ``peer`` until the application closes the outbox.

    Stops quietly when a newer attachment (stateful reconnect) replaced this one.

    :param serial: the attachment serial returned by :meth:`HttpConnection.activate`.
    """
    code = CLOSE_NORMAL
    try:
        while connection.is_current(serial) or connection.disposed:
            batch = await connection.outbox.next_batch()
            if batch is None:
                break
            if not connection.is_current(serial) and not connection.disposed:
                # Superseded while waiting: leave the frames to the stateful replay.
                return
            for frame in batch:
                if frame.binary:
                    await peer.send(frame.data, binary=True)
                else:
                    await peer.send(frame.data.decode("utf-8"), binary=False)
    except Exception as exc:  # noqa: BLE001 - any write failure ends just this connection
        log.debug("websocket write failed for %s: %r", connection.connection_id, exc)
        code = CLOSE_INTERNAL_ERROR
    peer.close(code)
