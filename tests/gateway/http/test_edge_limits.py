"""The HTTP edge under abuse: slowloris, connection floods, oversize requests and aborted uploads.

A real gateway (with the embedded store: nothing here touches the queue's logic) is driven over raw
sockets from several loopback addresses, since what is tested is what HTTP client libraries never send.
"""

from __future__ import annotations

import asyncio
import resource
import socket

import pytest

from gateway.app import Gateway
from gateway.config import load_settings
from gateway.redis.client import open_redis
from tests.harness.edge_client import (
    TIMEOUT,
    close_all,
    connect,
    exchange,
    open_many,
    parse_response,
    raise_open_file_limit,
    read_one_response,
    read_to_end,
)
from tests.harness.stack import base_config, start_stack

FLOOD = 2000
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: "  # and then nothing, ever
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"


@pytest.fixture
def many_files():
    old = raise_open_file_limit(3 * FLOOD)
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, old)


@pytest.fixture
async def edge_stack():
    stacks = []

    async def make(**limits):
        stack = await start_stack(open_redis(None), config=base_config(cap=0, Limits=limits))
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        await stack.close()
        await stack.gateway.redis.aclose()


async def _end_of(reader: asyncio.StreamReader) -> bytes:
    """What is left to read; a reset counts as a close without an answer: a socket closed while the
    kernel still holds bytes the server never read (a busy machine's server closing on its deadline
    before reading the slow head) ends with a reset instead of a FIN."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def test_2000_slowloris_connections_are_closed_by_the_headers_timeout(edge_stack, many_files):
    stack = await edge_stack(RequestHeadersTimeoutSeconds=0.5, MaxConnections=0, MaxConnectionsPerIp=0)
    port = stack.gateway.port
    connections = await open_many(port, FLOOD, SLOW_HEAD)
    try:
        ends = await asyncio.wait_for(asyncio.gather(*(_end_of(reader) for reader, _ in connections)), TIMEOUT)
        # Closed by the server, without an answer to a request that was never made.
        assert sum(1 for end in ends if end == b"") == FLOOD
        assert stack.gateway.server.caps.open_total == 0
        assert (await exchange(port, HEALTH)).status == 200
    finally:
        close_all(connections)


async def test_a_kept_alive_connection_has_its_own_idle_timeout_and_a_stalled_body_is_dropped(edge_stack):
    stack = await edge_stack(RequestHeadersTimeoutSeconds=30, KeepAliveTimeoutSeconds=0.3,
                             RequestBodyTimeoutSeconds=0.3)
    port, server = stack.gateway.port, stack.gateway.server
    silent_reader, silent = await connect(port)  # a new connection that has not sent its head yet
    reader, writer = await connect(port)
    stalled_reader, stalled = await connect(port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert (await read_one_response(reader)).status == 200
        # A body announced but never finished: no answer, the connection is closed, nothing in flight.
        stalled.write(b"POST /api/session/leave/abc HTTP/1.1\r\nHost: gateway\r\nContent-Length: 100\r\n\r\n0123")
        assert await read_to_end(stalled_reader) == b""
        # Idle after its answer: closed after the keep-alive timeout...
        assert await read_to_end(reader) == b""
        # ... while the silent connection, older but under the 30 s headers timeout, is still open.
        assert server.caps.open_total == 1 and not silent_reader.at_eof()
        assert stack.gateway.inflight.count == 0
    finally:
        for w in (silent, writer, stalled):
            w.close()


async def test_a_flood_over_the_per_ip_cap_is_refused_and_another_address_is_served(edge_stack, many_files):
    cap = 50
    stack = await edge_stack(MaxConnectionsPerIp=cap, MaxConnections=0)
    port, server = stack.gateway.port, stack.gateway.server
    connections = await open_many(port, FLOOD, SLOW_HEAD)
    try:
        waiting = {asyncio.ensure_future(read_to_end(reader)) for reader, _ in connections}
        refused = []
        while len(refused) < FLOOD - cap:
            done, waiting = await asyncio.wait(waiting, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            assert done, f"only {len(refused)} connections were refused"
            refused.extend(parse_response(task.result()) for task in done)
        assert len(waiting) == cap and server.caps.open_from("127.0.0.1") == cap
        for response in refused:
            assert response.status == 503
            assert response.headers["retry-after"] == "5"
            assert response.headers["content-type"] == "application/json; charset=utf-8"
            assert response.json() == {
                "message": "Too many open connections from your network address. Close some, or try again shortly."}
        # Another client is served meanwhile.
        assert (await exchange(port, HEALTH, source="127.0.0.2")).status == 200
        for task in waiting:
            task.cancel()
    finally:
        close_all(connections)


async def test_the_total_cap_refuses_new_connections_until_one_closes(edge_stack):
    stack = await edge_stack(MaxConnections=20, MaxConnectionsPerIp=0)
    port = stack.gateway.port
    kept = []
    for _ in range(20):  # served and kept alive: each is known to have been admitted
        reader, writer = await connect(port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert (await read_one_response(reader)).status == 200
        kept.append((reader, writer))
    try:
        refused = await exchange(port, HEALTH, source="127.0.0.3")
        assert (refused.status, refused.json()) == (
            503, {"message": "The server has too many open connections. Please try again shortly."})
        assert refused.headers["retry-after"] == "5"
        kept.pop()[1].close()
        for _ in range(200):  # until the server has seen the close; each refusal is a round trip
            answer = await exchange(port, HEALTH, source="127.0.0.3")
            if answer.status == 200:
                break
        assert answer.status == 200
    finally:
        close_all(kept)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/nowhere", "/api/session/request", "/sessionHub"])
async def test_every_refusal_at_the_edge_is_json_with_a_message(edge_stack, path):
    stack = await edge_stack()
    port = stack.gateway.port
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    get = b"GET " + path.encode()
    post = b"POST " + path.encode() + b" HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
    cases = {
        get + b"?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: g\r\n\r\n": (414, "The URL is longer than 8 KiB."),
        get + b"?" + b"q" * 40_000 + b" HTTP/1.1\r\nHost: g\r\n\r\n": (414, "The URL is longer than 8 KiB."),
        get + b" HTTP/1.1\r\nHost: g\r\nX-Big: " + b"h" * 40_000 + b"\r\n\r\n":
            (431, "The request headers are larger than 32 KiB in total."),
        get + b" HTTP/1.1\r\nHost: g\r\nNo colon here\r\n\r\n": (400, None),
        b"GARBAGE\r\n\r\n": (400, None),
        post + b"Content-Length: many\r\n\r\n": (400, None),
        post + b"Transfer-Encoding: chunked\r\n\r\nnot-hex\r\n": (400, None),
        post + b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 100 + b"\r\n": (400, None),  # a chunk-size line
        post + b"Content-Length: 2000000\r\n\r\n": (413, None),
        post + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 32 + b"0\r\n\r\n": (413, None),
    }
    for request, (status, message) in cases.items():
        response = await exchange(port, request)
        if path == "/sessionHub" and request.startswith(b"POST") and response.body == b"Connection ID required":
            # A hub send streams its body: unless the edge refused the head, the SignalR layer answers
            # first, in its protocol's own words (text, as ASP.NET does), before any of the body is read.
            assert response.status == 400
            continue
        assert response.status == status, (request[:60], response)
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"message"} and body["message"]
        if message is not None:
            assert body["message"] == message
    assert stack.gateway.inflight.count == 0


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/session/request"), ("POST", "/api/session/leave/abc"),
    ("DELETE", "/api/session/request/abc"), ("POST", "/api/webhook/session-ended"),
])
async def test_a_body_over_64_kib_is_413_on_every_route_that_takes_one_declared_or_chunked(edge_stack, method, path):
    stack = await edge_stack()
    port = stack.gateway.port
    head = f"{method} {path} HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\nX-Api-Token: x\r\n".encode()
    body = b"x" * 70_000
    declared = await exchange(port, head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    chunked = await exchange(port, head + b"Transfer-Encoding: chunked\r\n\r\n"
                             + b"".join(b"1000\r\n" + body[i:i + 4096] + b"\r\n" for i in range(0, 69_632, 4096))
                             + b"0\r\n\r\n")
    for response in (declared, chunked):
        assert (response.status, response.json()) == (413, {"message": "The request body is larger than 64 KiB."})


async def test_an_aborted_upload_does_not_hold_up_a_graceful_shutdown():
    redis = open_redis(None)
    gateway = Gateway(load_settings(data=base_config(), environ={}).settings, redis=redis)
    port = await gateway.start(port=0)
    try:
        # (A hub send to an unknown connection is answered 404 before its body is read; hub sends that
        # stop midway are covered by tests/signalr/hubs/test_bounded_work.py.)
        for path in ("/api/session/request", "/api/session/leave/abc", "/nowhere"):
            reader, writer = await connect(port)
            writer.write(f"POST {path} HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".encode())
            # The interim answer comes once the request is routed, i.e. counted as in flight.
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 100")
            writer.write(b"10\r\n{\"campaignId\": \"\r\n")  # part of the body, then the client goes away
            await writer.drain()
            writer.transport.abort()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(gateway.stop(grace=10), 30)
        assert loop.time() - started < 3, "the shutdown waited for requests whose clients had gone"
        assert gateway.inflight.count == 0
    finally:
        await redis.aclose()


async def test_sockets_handed_over_by_the_processes_front_are_counted_and_timed_out_alike():
    # As a --processes worker: started without a listener, fed accepted sockets through accept_socket.
    redis = open_redis(None)
    config = base_config(Limits={"MaxConnectionsPerIp": 2, "RequestHeadersTimeoutSeconds": 0.5})
    gateway = Gateway(load_settings(data=config, environ={}).settings, redis=redis)
    await gateway.start(sockets=[])
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    clients = []
    try:
        for _ in range(3):
            clients.append(await connect(listener.getsockname()[1]))
            accepted, _ = await loop.sock_accept(listener)
            gateway.accept_socket(accepted)
        (r1, w1), (r2, w2), (r3, _) = clients
        refused = parse_response(await read_to_end(r3))
        assert refused.status == 503 and refused.json()["message"].startswith("Too many open connections")
        w1.write(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n")
        assert (await read_one_response(r1)).status == 200
        w2.write(SLOW_HEAD)
        assert await read_to_end(r2) == b""  # the headers timeout applies to handed-over sockets too
    finally:
        close_all(clients)
        listener.close()
        await gateway.stop(grace=1)
        await redis.aclose()
