"""The WebSocket frame writer: builds each frame itself and hands it to the socket at once."""

from __future__ import annotations

import struct

import tornado.websocket
from tornado.iostream import IOStream, SSLIOStream

from signalr.tornado.flow import WriteGuard

TEXT_FIN = 0x81
BINARY_FIN = 0x82


class WebSocketPeer:
    """:class:`signalr.connections.transports.websocket.WebSocketPeer` for a Tornado handler."""

    __slots__ = ("_handler", "_guard")

    def __init__(self, handler: tornado.websocket.WebSocketHandler, guard: WriteGuard) -> None:
        self._handler = handler
        self._guard = guard

    def send(self, data: bytes, *, binary: bool) -> None:
        # Tornado's write_message wraps every frame in a Task (about a tenth of the server's CPU per
        # Echo); the frame is simple enough to build here and hand to the stream, whose own write
        # future already swallows a failure (that surfaces as on_close). Unmasked, uncompressed:
        # servers never mask and HubHandler negotiates no compression.
        protocol = self._handler.ws_connection
        if protocol is None or protocol.is_closing():
            raise tornado.websocket.WebSocketClosedError()
        first = BINARY_FIN if binary else TEXT_FIN
        size = len(data)
        if size < 126:
            frame = bytes((first, size)) + data
        elif size <= 0xFFFF:
            frame = struct.pack("!BBH", first, 126, size) + data
        else:
            frame = struct.pack("!BBQ", first, 127, size) + data
        stream = protocol.stream
        if not stream._write_buffer and type(stream) is not SSLIOStream and not stream.closed():
            # Nothing of ours waits to go out: hand the frame to the kernel now. Tornado's write would
            # do the same after making a future and scheduling its callback, which is most of the cost
            # of the small frames a crowd gets (its Pings, its positions).
            sent = _send_now(stream, frame)
            if sent == len(frame):
                return
            frame = frame[sent:]
        flushed = stream.write(frame)
        if not flushed.done():
            self._guard.backed_up(flushed, len(frame))

    def close(self, code: int) -> None:
        self._handler.close(code)


def _send_now(stream: IOStream, frame: bytes) -> int:
    """Bytes of ``frame`` the socket took at once; 0 on a full socket or an error (the stream's own
    write of the rest then meets the error and closes the stream as it always does)."""
    try:
        return stream.socket.send(frame)  # type: ignore[union-attr]
    except OSError:  # BlockingIOError included
        return 0
