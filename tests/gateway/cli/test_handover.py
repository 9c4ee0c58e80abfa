"""The pieces of a ``--processes`` hand-over, in one process: which worker a request names, the bytes a
worker has read and not served, the channel message that carries them, and a Tornado server serving
them first (the whole path through real workers: tests/gateway/cli/test_workers_route_clients.py)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
import tornado.iostream
import tornado.web

from gateway.cli.handover import unread_bytes
from gateway.cli.supervisor import FRESH, HANDED, MAX_HANDOVER_BYTES, Arrival, hand_over, owner_of, receive, worker_for
from gateway.config.settings import LimitsSettings
from gateway.http.connections import PrefilledStream
from gateway.http.edge import EdgeServer
from gateway.http.inflight import InflightRequests

HEAD = b"POST /sessionHub?id=1.abc HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"


@pytest.mark.parametrize(("target", "owner"), [
    ("/sessionHub?id=1.AbC-_x", 1),
    ("/sessionHub?id=0.xyz&_=123", 0),
    ("/sessionHub?ID=1.xyz", 1),  # the hub reads query keys in any case
    ("/sessionHub?id=0.a&id=1.b", 1),  # and the last value
    ("http://gateway.example/sessionHub?id=1.abc", 1),  # absolute form
    ("/sessionHub/negotiate?negotiateVersion=1", None),
    ("/sessionHub?id=2.abc", None),  # no such worker: an unknown id wherever it lands
    ("/sessionHub?id=9999999.abc", None),
    ("/sessionHub?id=%D9%A1.abc", None),  # a digit of another script is no worker index
    ("/sessionHub?id=abc", None),  # no prefix
    ("/sessionHub?id=", None),
    ("/api/session/status/1.x", None),
])
def test_owner_of_reads_the_id_as_the_hub_does(target: str, owner: int | None) -> None:
    assert owner_of(target, 2) == owner


@pytest.mark.parametrize(("target", "owner"), [
    ("/sessionHub?id=gw1.1.AbC-_x", 1),  # Instance.Id first, then the worker index
    ("/sessionHub?id=gw1.0.xyz", 0),
    ("/sessionHub?id=gw2.1.xyz", None),  # another instance's token: 404 wherever it lands
    ("/sessionHub?id=1.xyz", None),  # no instance id: not this instance's
    ("/sessionHub?id=gw1.xyz", None),  # no worker index
    ("/sessionHub?id=gw1", None),
])
def test_owner_of_looks_past_the_instance_id(target: str, owner: int | None) -> None:
    assert owner_of(target, 2, "gw1.") == owner


def test_an_instance_id_of_digits_is_not_taken_for_a_worker_index() -> None:
    assert owner_of("/sessionHub?id=1.0.abc", 2, "1.") == 0
    assert worker_for(b"GET /sessionHub?id=7.1.x HTTP/1.1\r\n", 2, "7.") == 1


def test_worker_for_reads_the_request_line() -> None:
    assert worker_for(b"GET /sessionHub?id=1.x HTTP/1.1\r\nHost: h\r\n", 2) == 1
    assert worker_for(b"GET /sessionHub?id=1.x", 2) is None  # the line is not complete
    assert worker_for(b"garbage", 2) is None


async def test_unread_bytes_are_everything_after_the_head() -> None:
    """Pins where Tornado keeps what it read past a request head (a private buffer; see handover.py)."""
    ours, theirs = socket.socketpair()
    pipelined = b"GET /healthz HTTP/1.1\r\n\r\n"
    theirs.sendall(HEAD + b"hello" + pipelined)
    stream = tornado.iostream.IOStream(ours)
    try:
        assert await stream.read_until_regex(b"\r?\n\r?\n", max_bytes=65536) == HEAD
        assert unread_bytes(stream) == b"hello" + pipelined
    finally:
        stream.close()
        theirs.close()


async def test_a_handed_stream_yields_its_bytes_first_then_the_socket() -> None:
    ours, theirs = socket.socketpair()
    stream = PrefilledStream(ours, b"0123456789-rest")
    stream.read_chunk_size = 4  # the handed bytes take several reads
    try:
        assert await stream.read_bytes(6) == b"012345"
        theirs.sendall(b"abc")
        assert await stream.read_bytes(12) == b"6789-restabc"  # then the socket
    finally:
        stream.close()
        theirs.close()
    ours, theirs = socket.socketpair()
    stream = PrefilledStream(ours, b"0123456789-rest")
    stream.read_chunk_size = 4
    try:
        assert await stream.read_bytes(6) == b"012345"
        # Some of the rest is in Tornado's buffer, some still handed: both count as unread.
        assert unread_bytes(stream) == b"6789-rest"
    finally:
        stream.close()
        theirs.close()


def test_a_hand_over_carries_the_socket_and_every_byte() -> None:
    """worker -> parent -> worker, with more bytes than one Unix datagram may hold."""
    worker, parent = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent_out, owner = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    client, server_side = socket.socketpair()
    unread = HEAD + os.urandom(MAX_HANDOVER_BYTES // 2)
    try:
        hand_over(worker, server_side, unread, 1)
        data, fds, _, _ = socket.recv_fds(parent, 64, 2)
        assert data == HANDED + b"1" and len(fds) == 2
        socket.send_fds(parent_out, [HANDED], fds)  # what Supervisor._relay does
        for fd in fds:
            os.close(fd)
        owner.setblocking(False)
        (arrival,) = receive(owner)
        assert arrival.unread == unread
        arrival.sock.sendall(b"answer")
        assert client.recv(16) == b"answer"
        arrival.sock.close()
        with pytest.raises(OSError, match="too large"):
            hand_over(worker, server_side, b"x" * (MAX_HANDOVER_BYTES + 1), 1)
        socket.send_fds(parent_out, [FRESH], [server_side.fileno()])
        (fresh,) = receive(owner)
        assert fresh.unread == b""
        fresh.sock.close()
        assert receive(owner) == []  # nothing more: non-blocking
    finally:
        for sock in (worker, parent, parent_out, owner, client, server_side):
            sock.close()


class _Echo(tornado.web.RequestHandler):
    def post(self) -> None:
        self.write(b"got " + self.request.body)


async def test_a_server_serves_handed_bytes_as_if_just_read() -> None:
    """The owner's HTTP server parses the handed request (body still to come from the socket), then
    reads the next request from the socket as usual, on the same kept-alive connection."""
    from gateway.cli.handover import Handover

    server = EdgeServer(tornado.web.Application([(r"/sessionHub", _Echo)]), limits=LimitsSettings(),
                        inflight=InflightRequests())
    client, server_side = socket.socketpair()
    channel, parent = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        server_side.setblocking(False)
        Handover(1, 2, channel).serve(server, Arrival(server_side, HEAD + b"he"))
        reader, writer = await asyncio.open_connection(sock=client)
        writer.write(b"llo" + HEAD + b"again")
        first = await asyncio.wait_for(reader.readuntil(b"got hello"), 5)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"got again"), 5)).startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()
    finally:
        server.stop()
        await server.close_all_connections()
        channel.close()
        parent.close()
