"""The WebSocket frame writer: builds each frame itself and hands it to the socket at once."""

from __future__ import annotations

import struct

import tornado.websocket

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
        flushed = protocol.stream.write(frame)
        if not flushed.done():
            self._guard.backed_up(flushed, len(frame))

    def close(self, code: int) -> None:
        self._handler.close(code)
