"""The WebSocket frame reader: Tornado's RFC 6455 protocol with a leaner receive loop."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from collections.abc import Awaitable
from typing import Any

import tornado.websocket
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.util import _websocket_mask

from signalr.tornado.flow import TCP_FIN_WAIT1, TCP_FIN_WAIT2, peer_gone, tcp_state

log = logging.getLogger("signalr.transport")

_READ_CHUNK = 64 * 1024
# While the hub is busy the socket is not read, so Tornado would not notice the client leaving:
# look at the socket's TCP state this often instead.
_PEER_CHECK_INTERVAL = 0.2
#: What :meth:`HubWebSocketProtocol._cut_frame` returns for a frame refused as too large.
_REFUSED = object()
# Like Tornado's own loop: give other connections a turn after this much work (a frame counts 1 KiB).
_YIELD_AFTER = 256 * 1024
_FRAME_COST = 1024
#: One read's scratch space for every connection of a thread's event loop, which runs one read at a time
#: (per thread: ``recv_into`` releases the GIL, so two loops in two threads must not share one).
_scratch = threading.local()
#: What :func:`_read_socket` returns when the socket has nothing now.
_NOTHING = None


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
        # From here the reads go on as callbacks and this returns: nothing waits on the connection
        # between frames, so no task (nor the chain of coroutine frames through the handler's request
        # that awaits this) lives as long as the connection: about 3 KiB of each idle client's memory.
        _FrameReader(self).read_next(0)

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


def _can_watch(stream: Any) -> bool:
    """Whether the reader may wait for ``stream``'s socket itself: a plain socket stream (TLS keeps bytes
    the socket no longer shows as readable) that holds no bytes, awaits no read, and whose socket Tornado
    watches for reads only to notice a close (an idle stream: Tornado's reader is then ours to borrow)."""
    if not isinstance(stream, IOStream) or isinstance(stream, SSLIOStream) or stream.closed():
        return False
    io_loop = stream.io_loop
    readers = getattr(io_loop, "readers", None)
    return (stream._read_buffer_size == 0 and stream._read_future is None  # type: ignore[attr-defined]
            and readers is not None and stream.fileno().fileno() in readers  # type: ignore[union-attr]
            and hasattr(io_loop, "selector_loop"))


def _read_socket(stream: IOStream) -> bytes | None:
    """What the stream's socket has now, through the stream's own ``read_from_fd`` (a subclass may hand
    out bytes of its own first); ``None`` when nothing, ``b""`` once closed or failed (the stream closed)."""
    view = getattr(_scratch, "view", None)
    if view is None:
        view = _scratch.view = memoryview(bytearray(_READ_CHUNK))
    try:
        count = stream.read_from_fd(view)
    except OSError as exc:
        stream.close(exc_info=exc)
        return b""
    if count is None:
        return _NOTHING
    if count == 0:
        stream.close()
        return b""
    return bytes(view[:count])


class _FrameReader:
    """The receive loop of one :class:`HubWebSocketProtocol` as callbacks on the stream's reads.

    Kept alive by the read it waits for (the stream holds the future, the future this reader's
    callback; or, while it watches the socket itself, the event loop holds its callback), and apart
    from the protocol so that the protocol's own attributes stay as Tornado made them (one more would
    turn every protocol's shared-key dict into a larger one of its own).

    Between frames an idle client's socket is watched by the reader itself: when it becomes readable the
    reader reads it and cuts the frames at once. Tornado's own path per small frame (its event handler, a
    read, a second read that finds nothing, a future and its callback on the next turn of the loop) was
    most of the CPU a crowd of idle clients costs with its keep-alive Pings. The reader borrows the event
    loop's read callback of the socket, which Tornado keeps registered on an idle stream only to notice a
    close, and gives it back whenever Tornado's path is needed again (a frame larger than one read, a
    full hub inbox, a turn yielded to other connections, a close); Tornado's write path is untouched.
    """

    __slots__ = ("_done", "_held", "_protocol", "_unread", "_watching", "_work")

    def __init__(self, protocol: HubWebSocketProtocol) -> None:
        self._protocol = protocol
        self._unread = b""  # the start of a frame whose rest has not come yet
        self._work = 0
        self._done = False
        self._held: asyncio.Future[None] | None = None  # a wait for the hub or a lingering close
        self._watching = False  # the socket's read callback is this reader's

    def read_next(self, missing: int | None) -> None:
        """Read on: ask the stream for more bytes (``missing``: the rest of a big frame, read whole).

        Bytes the stream already holds are taken at once, as the coroutine that awaited a finished
        read went on without yielding: only a read that has to wait for the socket ends the turn.
        """
        while missing is not None:
            stream = self._protocol.stream
            if missing <= _READ_CHUNK and _can_watch(stream):
                chunk = _read_socket(stream)
                if chunk is _NOTHING:
                    self._watch(stream)
                    return
                if not chunk:
                    self._abort()
                    return
                missing = self._take_bytes(chunk)
                continue
            try:
                if missing > _READ_CHUNK:
                    # The rest of a big frame in one read: no quadratic re-joining of small chunks.
                    future = self._protocol.stream.read_bytes(missing)
                else:
                    future = self._protocol.stream.read_bytes(_READ_CHUNK, partial=True)
            except StreamClosedError:
                self._abort()
                return
            if not future.done():
                future.add_done_callback(self._on_chunk)
                return
            missing = self._take_chunk(future)

    def _on_chunk(self, future: asyncio.Future[bytes]) -> None:
        self.read_next(self._take_chunk(future))

    def _take_chunk(self, future: asyncio.Future[bytes]) -> int | None:
        """Take a finished read; returns what to read next, or None when reading stops or waits."""
        try:
            chunk = future.result()
        except StreamClosedError:
            self._abort()
            return None
        return self._take_bytes(chunk)

    def _take_bytes(self, chunk: bytes) -> int | None:
        self._protocol._wire_bytes_in += len(chunk)
        self._unread = self._unread + chunk if self._unread else chunk
        return self._take_frames()

    # -- watching the socket between frames ------------------------------------------------------------

    def _watch(self, stream: IOStream) -> None:
        stream.io_loop.selector_loop.add_reader(stream.fileno().fileno(), self._on_readable)  # type: ignore[attr-defined,union-attr]
        self._watching = True
        # A close by anyone else (Tornado's close-handshake timeout, a failed write, the hub ending the
        # connection) takes this callback away with the stream's handlers, and no read is pending to fail:
        # the stream's close callback is then how the reader learns of it and ends the connection.
        stream.set_close_callback(self._closed_while_watching)

    def _closed_while_watching(self) -> None:
        if self._watching:
            self._watching = False
            self._abort()

    def _unwatch(self) -> None:
        """Give the socket's read callback back to Tornado (unless the stream closed, which removed it)."""
        if not self._watching:
            return
        self._watching = False
        stream = self._protocol.stream
        if stream is None or stream.closed():
            return  # (its close callback, if still to come, finds the reader no longer watching)
        stream.set_close_callback(None)
        io_loop = stream.io_loop
        fd = stream.fileno().fileno()  # type: ignore[union-attr]
        if fd in io_loop.readers:  # type: ignore[attr-defined]
            # What Tornado's AsyncIOLoop registers for a stream that waits for reads (add_handler).
            io_loop.selector_loop.add_reader(fd, io_loop._handle_events, fd, IOLoop.READ)  # type: ignore[attr-defined]
        else:
            io_loop.selector_loop.remove_reader(fd)  # type: ignore[attr-defined]

    def _on_readable(self) -> None:
        stream = self._protocol.stream
        if not self._watching or stream is None or stream.closed():
            return
        try:
            chunk = _read_socket(stream)
            if chunk is _NOTHING:
                return
            if not chunk:
                self._watching = False  # the stream closed, and took its read callback away with it
                self._abort()
                return
            missing = self._take_bytes(chunk)
            if missing is not None and missing <= _READ_CHUNK and not stream.closed() and self._watching:
                return  # keep watching: the next frame comes the same way
            self._unwatch()
            if missing is not None:
                self.read_next(missing)
        except Exception:  # a bug here must end this connection, not leave it unread forever
            log.exception("websocket reader failed")
            self._unwatch()
            self._abort()

    def _take_frames(self) -> int | None:
        """Hand every whole frame read so far to Tornado's message handling; returns the bytes to read
        next, or None when reading stops, waits for the hub, or yields (it then goes on by itself)."""
        protocol = self._protocol
        try:
            buffer = self._unread
            consumed = 0
            missing = 0
            while not protocol.client_terminated:
                frame = protocol._cut_frame(buffer, consumed)
                if frame is False:
                    self._end()
                    return None
                if frame is _REFUSED:
                    self._held = asyncio.ensure_future(protocol._linger())
                    self._held.add_done_callback(self._lingered)
                    return None
                if isinstance(frame, int):
                    missing = frame
                    break
                opcode, fin, data, consumed = frame  # type: ignore[misc]
                self._work += _FRAME_COST + len(data)
                handled = protocol._on_frame(opcode, fin, data)
                if handled is False:
                    self._end()
                    return None
                if handled is not None:
                    # The hub's inbox is full: read nothing more until it took this (a task only
                    # then), and go on with the frames already read.
                    self._unread = buffer[consumed:]
                    self._held = asyncio.ensure_future(protocol._until_taken(handled))
                    self._held.add_done_callback(self._taken)
                    return None
            self._unread = buffer[consumed:] if consumed else buffer
            if protocol.client_terminated:
                self._end()
                return None
            if self._work >= _YIELD_AFTER:
                # Like Tornado's own loop: give other connections a turn after this much work.
                self._work = 0
                asyncio.get_running_loop().call_soon(self.read_next, missing)
                return None
            return missing
        except Exception:  # a bug here must end this connection, not leave it unread forever
            log.exception("websocket reader failed")
            self._abort()
            return None

    def _taken(self, future: asyncio.Future[None]) -> None:
        self._held = None
        if future.cancelled() or future.exception() is not None:  # the peer left while the hub was busy
            self._abort()
        else:
            self.read_next(self._take_frames())

    def _lingered(self, future: asyncio.Future[None]) -> None:
        self._held = None
        if not future.cancelled() and future.exception() is not None:
            log.debug("lingering close failed: %r", future.exception())
        self._abort()  # the client has closed too, or gave up: the socket goes now (no-op if it went)

    def _abort(self) -> None:
        self._protocol._abort()
        self._end()

    def _end(self) -> None:
        """Once: tell the handler the connection is over (as the end of Tornado's receive loop does)."""
        if not self._done:
            self._done = True
            protocol = self._protocol
            protocol.handler.on_ws_connection_close(protocol.close_code, protocol.close_reason)
