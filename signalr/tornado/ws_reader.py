"""The WebSocket frame reader: Tornado's RFC 6455 protocol with a leaner receive loop."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable
from typing import Any

import tornado.websocket
from tornado.iostream import StreamClosedError
from tornado.util import _websocket_mask

from signalr.tornado.flow import TCP_FIN_WAIT1, TCP_FIN_WAIT2, peer_gone, tcp_state

_READ_CHUNK = 64 * 1024
# While the hub is busy the socket is not read, so Tornado would not notice the client leaving:
# look at the socket's TCP state this often instead.
_PEER_CHECK_INTERVAL = 0.2
#: What :meth:`HubWebSocketProtocol._cut_frame` returns for a frame refused as too large.
_REFUSED = object()
# Like Tornado's own loop: give other connections a turn after this much work (a frame counts 1 KiB).
_YIELD_AFTER = 256 * 1024
_FRAME_COST = 1024


class HubWebSocketProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's RFC 6455 protocol with a leaner reader for the many small frames of SignalR.

    Tornado reads every frame in three ``read_bytes`` calls (header, mask, payload), each leaving
    bytes in the stream buffer, so the socket is dropped from and re-added to epoll per message:
    about a fifth of the server's CPU per Echo. This reader takes whatever the socket has and cuts
    the frames itself, with the same checks and outcomes (abort on reserved bits or bad control
    frames, close 1009 above ``websocket_max_message_size``); messages then go through Tornado's
    own ``_handle_message`` (UTF-8 check, close handshake, ping/pong).

    A frame over ``max_message_size`` is refused from its header, before its payload is read. When
    ``on_message`` returns an awaitable (the hub's inbox is full), no more bytes are read until it
    resolves: the client is held back by TCP.
    """

    async def _receive_frame_loop(self) -> None:
        if self._decompressor is not None:  # HubHandler negotiates no compression; keep Tornado's path
            await super()._receive_frame_loop()
            return
        try:
            buffer = b""
            work = 0
            missing = 0
            while not self.client_terminated:
                if missing > _READ_CHUNK:
                    # The rest of a big frame in one read: no quadratic re-joining of small chunks.
                    chunk = await self.stream.read_bytes(missing)
                else:
                    chunk = await self.stream.read_bytes(_READ_CHUNK, partial=True)
                buffer = buffer + chunk if buffer else chunk
                consumed = 0
                while not self.client_terminated:
                    frame = self._cut_frame(buffer, consumed)
                    if frame is False:
                        return
                    if frame is _REFUSED:
                        await self._linger()
                        return
                    if isinstance(frame, int):
                        missing = frame
                        break
                    opcode, fin, data, consumed = frame
                    work += _FRAME_COST + len(data)
                    handled = self._on_frame(opcode, fin, data)
                    if handled is False:
                        return
                    if handled is not None:
                        await self._until_taken(handled)
                buffer = buffer[consumed:] if consumed else buffer
                self._wire_bytes_in += len(chunk)
                if work >= _YIELD_AFTER:
                    work = 0
                    await asyncio.sleep(0)
        except StreamClosedError:
            self._abort()
        finally:
            self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    async def _until_taken(self, handled: Awaitable[Any]) -> None:
        """Wait, reading nothing, until the hub took what it was given; give up once the peer left.

        Checked after every wait too: bytes a client sent before it reset the connection can still
        be read, megabytes of them, and they are work nobody will see the answer to.
        """
        future = asyncio.ensure_future(handled)
        while True:
            if not future.done():
                await asyncio.wait((future,), timeout=_PEER_CHECK_INTERVAL)
            if peer_gone(self.stream.socket):
                raise StreamClosedError()
            if future.done():
                return

    async def _linger(self) -> None:
        """After refusing a frame with 1009, end the hub connection at once but keep the socket a
        moment: the close frame leaves with a FIN behind it, and the socket is closed once the client
        closed too (at most Tornado's close timeout), so that no reset (the client's unread rest makes
        closing send one) overtakes the close frame. Where TCP states are unknown, it closes at once."""
        self.handler.end_connection()  # type: ignore[attr-defined]
        stream = self.stream
        try:
            await stream.write(b"")
            stream.socket.shutdown(socket.SHUT_WR)
        except (StreamClosedError, OSError):
            return
        while not stream.closed() and tcp_state(stream.socket) in (TCP_FIN_WAIT1, TCP_FIN_WAIT2):
            await asyncio.sleep(_PEER_CHECK_INTERVAL)

    def _cut_frame(self, buffer: bytes, start: int) -> tuple[int, int, bytes, int] | int | bool | object:
        """The frame at ``start``: (opcode, fin, unmasked payload, end); the number of bytes still
        missing when incomplete (0 if the header itself is); False to stop reading; ``_REFUSED`` for
        a frame over the size limit, refused from its header."""
        available = len(buffer) - start
        if available < 2:
            return 0
        first, second = buffer[start], buffer[start + 1]
        opcode = first & self.OPCODE_MASK
        if first & self.RSV_MASK:
            self._abort()  # an extension we did not negotiate
            return False
        length = second & 0x7F
        if opcode & 0x8 and length >= 126:
            self._abort()  # control frames carry at most 125 bytes
            return False
        offset = start + 2
        if length == 126:
            if available < 4:
                return 0
            (length,) = struct.unpack_from("!H", buffer, offset)
            offset += 2
        elif length == 127:
            if available < 10:
                return 0
            (length,) = struct.unpack_from("!Q", buffer, offset)
            offset += 8
        pending = self._fragmented_message_buffer
        if length + (len(pending) if pending is not None else 0) > self.params.max_message_size:
            self.close(1009, "message too big")
            return _REFUSED
        masked = second & 0x80
        end = offset + (4 if masked else 0) + length
        if end > len(buffer):
            return end - len(buffer)
        if masked:
            data = _websocket_mask(buffer[offset : offset + 4], buffer[offset + 4 : end])
        else:
            data = buffer[offset:end]
        return opcode, first & self.FIN, data, end

    def _on_frame(self, opcode: int, fin: int, data: bytes) -> Any:
        """Tornado's fragment handling; returns ``_handle_message``'s awaitable, or False to stop."""
        if opcode & 0x8:
            if not fin:
                self._abort()  # control frames must not be fragmented
                return False
        elif opcode == 0:
            if self._fragmented_message_buffer is None:
                self._abort()  # nothing to continue
                return False
            self._fragmented_message_buffer.extend(data)
            if not fin:
                return None
            opcode = self._fragmented_message_opcode
            data = bytes(self._fragmented_message_buffer)
            self._fragmented_message_buffer = None
        else:
            if self._fragmented_message_buffer is not None:
                self._abort()  # a new message before the previous one ended
                return False
            if not fin:
                self._fragmented_message_opcode = opcode
                self._fragmented_message_buffer = bytearray(data)
                return None
        return self._handle_message(opcode, data)
