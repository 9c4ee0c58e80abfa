"""A client connection at the edge: its stream, the answers Tornado writes or skips itself turned into
JSON (a bare ``400 Bad Request``, a silent close for an over-long head), and its lingering close.

A connection closed while its client is still sending lingers (half-closed, read from for up to 2 s), so
that the reset a close with unread input causes cannot destroy the answer. :class:`PrefilledStream` also
serves a connection handed over between ``--processes`` workers: it yields the bytes the other worker
read first.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import tornado.iostream
from tornado import gen

from gateway.http.edge_rules import MAX_HEAD_BYTES, NOT_HTTP, EdgeError, error_response, oversize_head_error

#: What Tornado writes, on its own, for a request it cannot parse (``HTTP1Connection._read_message``).
_TORNADO_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"
#: A connection closed by the server while its client is still sending (a refusal, a body over the
#: limit) is half-closed and read from for up to this long before it is closed (a "lingering close"):
#: closing a socket with unread input makes the kernel send a reset, which can destroy the answer
#: before the client reads it.
LINGER_SECONDS = 2.0
#: At most this much is read (and dropped) while lingering.
LINGER_BYTES = 1024 * 1024
#: At most this many connections linger at once; beyond, they are closed at once (a flood of refused
#: connections must not hold sockets for the linger time each).
MAX_LINGERING = 1024


class _ShortQueue:
    """The part of ``collections.deque`` that Tornado's stream uses for its two write queues, on a list.

    An empty deque takes 760 bytes (its first block) and a stream has two, held for as long as the
    connection lives, mostly empty: 1.4 KiB of every idle hub client. Full, they can be long (a future
    per write queued for a client that reads slowly, up to the send limit), so popping from the front
    moves a head index instead of the list, and the dead head is dropped once it is half the list:
    amortised O(1), as a deque's.
    """

    __slots__ = ("_items", "_head")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._head = 0

    def append(self, item: Any) -> None:
        self._items.append(item)

    def popleft(self) -> Any:
        items, head = self._items, self._head
        if head >= len(items):
            raise IndexError("pop from an empty queue")
        item, items[head] = items[head], None
        head += 1
        if 2 * head >= len(items):
            del items[:head]
            head = 0
        self._head = head
        return item

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            if index < -len(self):
                raise IndexError("queue index out of range")
            return self._items[index]
        if index >= len(self):
            raise IndexError("queue index out of range")
        return self._items[self._head + index]

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self._items, self._head, None)

    def clear(self) -> None:
        self._items.clear()
        self._head = 0


class PrefilledStream(tornado.iostream.IOStream):
    """An :class:`~tornado.iostream.IOStream` that first yields ``unread``: bytes of this socket that
    another process read but did not serve (a connection handed over between ``--processes`` workers)."""

    def __init__(self, sock: socket.socket, unread: bytes = b"", **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._unread = unread
        self._write_futures = _ShortQueue()  # type: ignore[assignment]
        self._write_buffer._buffers = _ShortQueue()  # type: ignore[assignment]

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        if not self._unread:
            return super().read_from_fd(buf)
        # Tornado tries a read before it waits for the socket to be readable, so these bytes are
        # never stuck behind a socket that stays silent.
        count = min(len(buf), len(self._unread))
        buf[:count] = self._unread[:count]
        self._unread = self._unread[count:]
        return count

    def take_unread(self) -> bytes:
        """The bytes handed in that Tornado has not asked for yet (emptied)."""
        rest, self._unread = self._unread, b""
        return rest


class EdgeStream(PrefilledStream):
    """A client connection's stream: reports its closing once, and answers in JSON where Tornado would not.

    :param on_closed: called once with the stream when the connection is closed, for whatever reason.
    :param linger: takes over a duplicate of the socket and ``on_closed`` for a lingering close.
    """

    def __init__(self, sock: socket.socket, *, on_closed: Callable[[EdgeStream], None],
                 linger: Callable[[socket.socket, Callable[[], None]], None], unread: bytes = b"",
                 **kwargs: Any) -> None:
        super().__init__(sock, unread, **kwargs)
        self._on_closed = on_closed
        self._linger = linger
        #: When the head or body being received must be complete (``time.monotonic``), or None while the
        #: connection owes nothing (a response is being made, or it became a WebSocket).
        self.deadline: float | None = None
        self._reading_head = False
        self.response_started = False
        self.requests_started = 0
        #: Waiting for the head of its next request, none of which has come yet (see ``idle``).
        self.between_requests = False

    @property
    def idle(self) -> bool:
        """True while the connection waits for a request and no byte of one has arrived: closing it then
        loses nothing (a client or proxy that reuses it sees it closed before sending, and reconnects)."""
        if not self.between_requests or self._unread or self.closed():
            return False
        buffered = getattr(self, "_read_buffer_size", 0)  # Tornado keeps what it read ahead here
        return not buffered and not _input_pending(self.socket)

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None) -> Awaitable[bytes]:
        # HTTP1Connection reads request heads with this call, and nothing else.
        self._reading_head = True
        return super().read_until_regex(regex, max_bytes)

    def read_until(self, delimiter: bytes, max_bytes: int | None = None) -> Awaitable[bytes]:
        self._reading_head = False  # a chunk-size line
        return super().read_until(delimiter, max_bytes)

    def write(self, data: bytes | memoryview) -> asyncio.Future[None]:
        if data == _TORNADO_BAD_REQUEST:
            # Tornado's answer to a request it could not parse; it closes the connection next.
            if self.response_started:  # a response is out (or under way): a second one would corrupt it
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                done.set_result(None)
                return done
            data = error_response(NOT_HTTP)
        if bytes(data[:12]) != b"HTTP/1.1 100":  # an interim "100 Continue" is not the response
            self.response_started = True
        return super().write(data)

    def close_fd(self) -> None:
        lingering = None
        try:
            if isinstance(self.error, tornado.iostream.UnsatisfiableReadError) and not self.response_started:
                # A head (or chunk-size line) that did not end within its limit: Tornado closes silently.
                self.socket.send(error_response(self._unsatisfied_read_error()))
                self.response_started = True
            if self.response_started and _input_pending(self.socket):
                lingering = self.socket.dup()
        except OSError:
            pass  # best effort: the connection is being closed right now, answer or not
        finally:
            super().close_fd()
            if lingering is None:
                self._on_closed(self)
            else:
                self._linger(lingering, partial(self._on_closed, self))

    def _unsatisfied_read_error(self) -> EdgeError:
        if not self._reading_head:
            return NOT_HTTP
        # The head so far, to tell a long URL from long headers. IOStream keeps it in its read buffer
        # and has no public way to look; without it the answer is the general one.
        buffered = getattr(self, "_read_buffer", b"")
        return oversize_head_error(bytes(buffered[:MAX_HEAD_BYTES]))


def _input_pending(sock: socket.socket) -> bool:
    """True when the client has sent data nobody read (closing now would reset the connection)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False


async def linger(sock: socket.socket, answer: bytes | None) -> None:
    """Send ``answer`` (if any), half-close, and read until the client closes or the linger ends; then close."""
    stream = tornado.iostream.IOStream(sock)
    try:
        if answer is not None:
            await stream.write(answer)
        sock.shutdown(socket.SHUT_WR)
        deadline = stream.io_loop.time() + LINGER_SECONDS  # for the whole linger, not each read
        read = 0
        while read < LINGER_BYTES:
            data = await gen.with_timeout(deadline, stream.read_bytes(65536, partial=True),
                                          quiet_exceptions=tornado.iostream.StreamClosedError)
            read += len(data)
    except (tornado.iostream.StreamClosedError, TimeoutError, OSError):
        pass
    finally:
        stream.close()


def close_now(sock: socket.socket, answer: bytes | None) -> None:
    """Without lingering: send what fits of ``answer`` at once, read what has arrived (so that the close
    is not a reset, as far as that goes), and close."""
    try:
        sock.setblocking(False)
        if answer is not None:
            sock.send(answer)
        sock.shutdown(socket.SHUT_WR)
        for _ in range(16):
            if not sock.recv(65536):
                break
    except OSError:  # BlockingIOError included: nothing more has arrived
        pass
    finally:
        sock.close()
