"""WebSockets transport: a writer that drains the connection's outbox into WebSocket messages.

JSON goes out in text frames and MessagePack in binary frames; a JS client in text mode cannot read
binary frames. Each drained batch holds only complete messages, so one WebSocket message never
carries half a hub message.
"""

from __future__ import annotations

import asyncio
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


class WebSocketWriter:
    """Drains ``connection.outbox`` into ``peer`` until the application closes the outbox.

    No task waits for frames: while the socket keeps up, the outbox hands each frame straight to the
    peer (``Outbox.direct``), and anything that had to queue (frames put before this writer started,
    or after a direct write failed) and the outbox's closing wake this writer with a callback, which
    runs on the next turn of the loop, as a task's wake-up would. An idle client so costs no task,
    coroutine frames or future (about 1.5 KiB).

    Stops quietly (no close) when a newer attachment (stateful reconnect) replaced this one, or when
    :meth:`stop` is called (the socket closed).

    :param serial: the attachment serial returned by :meth:`HttpConnection.activate`.
    """

    __slots__ = ("_connection", "_peer", "_serial", "_outbox", "_scheduled", "_stopped")

    def __init__(self, connection: HttpConnection, peer: WebSocketPeer, serial: int) -> None:
        self._connection = connection
        self._peer = peer
        self._serial = serial
        self._outbox = connection.outbox
        self._scheduled = False
        self._stopped = False

    def start(self) -> None:
        """Send what is queued and go on as frames come."""
        self._outbox.listen(self._wake)
        self._wake()

    def stop(self) -> None:
        """Send nothing more (the socket is gone, or the connection ends without a close frame)."""
        if not self._stopped:
            self._stopped = True
            self._outbox.unlisten(self._wake)
            if self._outbox.direct == self._direct:
                self._outbox.direct = None

    def _wake(self) -> None:
        if not self._scheduled and not self._stopped:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _direct(self, data: bytes, binary: bool) -> None:
        if not self._connection.is_current(self._serial):
            raise RuntimeError("superseded")
        self._peer.send(data, binary=binary)

    def _flush(self) -> None:
        self._scheduled = False
        if self._stopped:
            return
        connection, outbox = self._connection, self._outbox
        if not connection.is_current(self._serial) and not connection.disposed:
            self.stop()  # superseded: the frames are left to the stateful replay
            return
        try:
            for frame in outbox.take_batch():
                # Bytes go out as a text frame when binary is False: no decode/re-encode round trip.
                self._peer.send(frame.data, binary=frame.binary)
        except Exception as exc:  # noqa: BLE001 - any write failure ends just this connection
            log.debug("websocket write failed for %s: %r", connection.connection_id, exc)
            self._close(CLOSE_INTERNAL_ERROR)
            return
        if outbox.closed:
            self._close(CLOSE_NORMAL)
        elif connection.is_current(self._serial):
            outbox.direct = self._direct

    def _close(self, code: int) -> None:
        self.stop()
        self._peer.close(code)
