"""The WebSocket writer drains a connection's outbox without a task of its own: frames queued before it
started leave on the next turn of the loop, later ones straight away, the outbox's closing closes the
socket, a failing write closes it with 1011, and a superseded or stopped writer sends nothing more.

The peer (the adapter's socket) is the seam: a recording stand-in here; over real sockets, every
WebSocket test of the suite goes through this writer."""

from __future__ import annotations

import asyncio

from signalr.connections.connection import HttpConnection
from signalr.connections.transports.websocket import CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, WebSocketWriter
from signalr.options import HttpTransportType


class _Peer:
    def __init__(self, *, fail: bool = False) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.closed: list[int] = []
        self.fail = fail

    def send(self, data: bytes, *, binary: bool) -> None:
        if self.fail:
            raise OSError("the socket is gone")
        self.sent.append((data, binary))

    def close(self, code: int) -> None:
        self.closed.append(code)


def _attached() -> tuple[HttpConnection, int]:
    connection = HttpConnection(connection_id="c", token="t", negotiate_version=1, stateful_reconnect=False, now=0.0)
    _, serial = connection.activate(HttpTransportType.WEBSOCKETS)
    return connection, serial


async def _turn() -> None:
    """One turn of the loop: what the writer's callback scheduled has run."""
    await asyncio.sleep(0)


async def test_queued_frames_leave_on_start_then_frames_go_straight_out() -> None:
    connection, serial = _attached()
    peer = _Peer()
    connection.outbox.put(b"a", binary=False)
    connection.outbox.put(b"b", binary=False)
    connection.outbox.put(b"\x01", binary=True)
    writer = WebSocketWriter(connection, peer, serial)
    writer.start()
    assert connection.outbox.draining  # counts as a waiting transport: frames are not held to the limit
    await _turn()
    assert peer.sent == [(b"ab", False), (b"\x01", True)]  # merged per kind, in order
    connection.outbox.put(b"c", binary=False)
    assert peer.sent[-1] == (b"c", False)  # no turn of the loop needed
    assert asyncio.all_tasks() == {asyncio.current_task()}  # and no task made for any of it


async def test_closing_the_outbox_sends_what_is_left_then_closes_normally() -> None:
    connection, serial = _attached()
    peer = _Peer()
    WebSocketWriter(connection, peer, serial).start()
    await _turn()
    connection.outbox.finish(b"bye", binary=False)
    await _turn()
    assert peer.sent == [(b"bye", False)] and peer.closed == [CLOSE_NORMAL]


async def test_a_failing_write_closes_with_1011() -> None:
    connection, serial = _attached()
    peer = _Peer(fail=True)
    connection.outbox.put(b"a", binary=False)
    WebSocketWriter(connection, peer, serial).start()
    await _turn()
    assert peer.closed == [CLOSE_INTERNAL_ERROR]
    assert not connection.outbox.draining  # and it no longer listens


async def test_a_failing_direct_write_queues_the_frame_and_closes_with_1011() -> None:
    connection, serial = _attached()
    peer = _Peer()
    WebSocketWriter(connection, peer, serial).start()
    await _turn()
    peer.fail = True
    assert connection.outbox.put(b"a", binary=False)
    await _turn()
    assert peer.closed == [CLOSE_INTERNAL_ERROR]


async def test_a_superseded_writer_leaves_its_frames_and_does_not_close() -> None:
    connection = HttpConnection(connection_id="c", token="t", negotiate_version=1, stateful_reconnect=True, now=0.0)
    _, serial = connection.activate(HttpTransportType.WEBSOCKETS)
    peer = _Peer()
    WebSocketWriter(connection, peer, serial).start()
    await _turn()
    connection.deactivate(serial, 1.0)
    connection.activate(HttpTransportType.WEBSOCKETS)  # a stateful reconnect's new socket
    connection.outbox.put(b"for the new socket", binary=False)
    await _turn()
    assert peer.sent == [] and peer.closed == []
    assert connection.outbox.take_batch()[0].data == b"for the new socket"


async def test_a_stopped_writer_sends_nothing_more() -> None:
    connection, serial = _attached()
    peer = _Peer()
    writer = WebSocketWriter(connection, peer, serial)
    writer.start()
    await _turn()
    writer.stop()
    assert connection.outbox.direct is None and not connection.outbox.draining
    connection.outbox.put(b"a", binary=False)
    connection.outbox.close()
    await _turn()
    assert peer.sent == [] and peer.closed == []
