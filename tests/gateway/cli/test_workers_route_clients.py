"""``serve --processes 2``: every SignalR client, every transport and every reuse of a kept-alive
connection reaches the worker that holds its SignalR connection.

One deployment for the module, each part a separate OS process started the way an operator would: a
test-owned ``redis-server``, ``python -m gateway simulate-platform`` and ``python -m gateway serve
--processes 2`` (cap 1). Each client test queues a request, connects with a real client library,
registers, frees the slot (the platform's webhook) and waits for SessionReady.

How the tests know which worker is which: every connection token and connection id starts with its
worker's index (``"0."``, ``"1."``), and the front hands new connections that name no SignalR
connection to the workers in turn, so of three fresh connections opened one after the other the first
and the third reach the same worker and the second the other one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from tests.harness.paths import ROOT, SESSION_HUB_CLIENTS
from tests.harness.processes import worker_pids
from tests.harness.python_clients import CoreClient, PyClient
from tests.harness.redis_process import RedisProcess, free_port
from tests.harness.stack import API_TOKEN, WEBHOOK_TOKEN, base_config, conversation_id_of, session_body

pytestmark = [pytest.mark.redis, pytest.mark.interop]

NODE_SCRIPT = SESSION_HUB_CLIENTS / "pooled_flow.js"
TIMEOUT = 10.0
RS = "\x1e"
PREFIXED_ID = re.compile(r"^([01])\.[A-Za-z0-9_-]{22}$")


@dataclass
class Deployment:
    """The running gateway, and which conversations hold its slot and which requests wait."""

    port: int
    live: set[str] = field(default_factory=set)
    waiting: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fresh(self) -> HTTPConnection:
        return HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)

    def call(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
             conn: HTTPConnection | None = None) -> tuple[int, bytes]:
        """One request (on ``conn`` when given, kept alive; else on a connection of its own)."""
        own = conn is None
        conn = conn or self.fresh()
        try:
            payload = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
            sent = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers={**sent, **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            if own:
                conn.close()

    def negotiate(self, conn: HTTPConnection | None = None, *, version: int | None = 1) -> dict[str, Any]:
        query = "" if version is None else f"?negotiateVersion={version}"
        status, body = self.call("POST", "/sessionHub/negotiate" + query, b"", conn=conn)
        assert status == 200, (status, body)
        return json.loads(body)

    def queue_request(self) -> str:
        """A request that waits in the queue (the slot is held by an earlier session)."""
        for request_id in self.waiting:  # left by a test that failed before its request was served
            self.call("DELETE", f"/api/session/request/{request_id}")
        self.waiting.clear()
        status, body = self.call("POST", "/api/session/request", session_body())
        if status == 200:
            self.live.add(conversation_id_of(json.loads(body)["webSocketUrl"]))
            status, body = self.call("POST", "/api/session/request", session_body())
        assert status == 202, (status, body)
        request_id = json.loads(body)["uniqueRequestId"]
        self.waiting.append(request_id)
        return request_id

    def free_slot(self) -> None:
        """The platform reports the live session ended: the queued request is dispatched."""
        for conversation in self.live:
            status, body = self.call("POST", "/api/webhook/session-ended", {"ConversationSessionId": conversation},
                                     headers={"X-Api-Token": WEBHOOK_TOKEN})
            assert status == 200, (status, body)
        self.live.clear()

    def served(self, request_id: str, web_socket_url: str) -> None:
        assert web_socket_url.startswith("ws://127.0.0.1:")
        self.waiting.remove(request_id)
        self.live.add(conversation_id_of(web_socket_url))


def _wait_healthy(deployment: Deployment, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    answered = 0
    while answered < 2:  # two fresh connections: one per worker
        assert proc.poll() is None, "the gateway exited during start-up:\n" + log_path.read_text()
        assert time.monotonic() < deadline, "the gateway did not answer:\n" + log_path.read_text()
        try:
            answered += deployment.call("GET", "/healthz")[0] == 200
        except OSError:  # not listening yet: there is no event to wait on for another process's port
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextlib.contextmanager
def _running(tmp: Path) -> Iterator[tuple[Deployment, subprocess.Popen[bytes]]]:
    """Redis, the simulator and ``serve --processes 2`` (cap 1), stopped afterwards."""
    redis = RedisProcess()
    redis.start()
    gw_port, sim_port = free_port(), free_port()
    config = base_config(cap=1)
    config["RedisConnectionString"] = redis.url
    config["VoiceAiPlatform"]["BaseUrl"] = f"http://127.0.0.1:{sim_port}/api/v1/"
    (tmp / "appsettings.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    log_path = tmp / "gateway.log"
    try:
        with (tmp / "simulator.log").open("wb") as sim_log, log_path.open("wb") as gw_log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "gateway", "simulate-platform", "--port", str(sim_port),
                 "--api-token", API_TOKEN, "--webhook-token", WEBHOOK_TOKEN, "--call-seconds", "3600",
                 "--webhook-url", f"http://127.0.0.1:{gw_port}/api/webhook/session-ended"],
                cwd=ROOT, stdout=sim_log, stderr=subprocess.STDOUT, env=env))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "gateway", "--log-level", "warning", "serve", "--config",
                 str(tmp / "appsettings.json"), "--host", "127.0.0.1", "--port", str(gw_port), "--processes", "2"],
                cwd=ROOT, stdout=gw_log, stderr=subprocess.STDOUT, env=env))
        result = Deployment(port=gw_port)
        _wait_healthy(result, procs[1], log_path)
        yield result, procs[1]
        assert _stop(procs[1]) == 0, log_path.read_text()
    finally:
        for proc in reversed(procs):
            _stop(proc)
        redis.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with _running(tmp_path_factory.mktemp("processes")) as (running, _):
        yield running


# -- ids ------------------------------------------------------------------------------------------


def test_every_connection_id_and_token_names_its_worker(deployment: Deployment) -> None:
    for version in (None, 1):
        workers = set()
        for _ in range(2):  # two fresh connections: one per worker
            answer = deployment.negotiate(version=version)
            # Version 0: the id is what the client sends as id=; version 1: the token is.
            routed = answer["connectionId"] if version is None else answer["connectionToken"]
            match = PREFIXED_ID.match(routed)
            assert match, answer
            assert PREFIXED_ID.match(answer["connectionId"]), answer
            workers.add(match.group(1))
        assert workers == {"0", "1"}


# -- third-party clients --------------------------------------------------------------------------


class CoreHub(CoreClient):
    """A signalrcore connection to ``/sessionHub`` (negotiate version 0: its connection id is its token)."""

    def __init__(self, base: str, transport: str, *, skip_negotiation: bool = False) -> None:
        super().__init__(base + "/sessionHub", transport, skip_negotiation=skip_negotiation)
        self.ready: queue.Queue[Any] = queue.Queue()
        self.hub.on("SessionReady", lambda args: self.ready.put(args[0]))

    def register(self, request_id: str) -> Any:
        result: queue.Queue[Any] = queue.Queue()
        self.hub.send("Register", [request_id], on_invocation=lambda message: result.put(message.result))
        return result.get(timeout=TIMEOUT)


@pytest.mark.parametrize("transport", ["web_sockets", "long_polling"])
def test_signalrcore(deployment: Deployment, transport: str) -> None:
    request_id = deployment.queue_request()
    client = CoreHub(deployment.base, transport)
    try:
        client.start()
        assert client.register(request_id)["status"] == "queued"
        deployment.free_slot()
        ready = client.ready.get(timeout=TIMEOUT)
        deployment.served(request_id, ready["webSocketUrl"])
    finally:
        client.stop()


def test_signalrcore_without_negotiate(deployment: Deployment) -> None:
    """Skip-negotiation WebSockets name no connection: whichever worker gets them creates it."""
    request_id = deployment.queue_request()
    client = CoreHub(deployment.base, "web_sockets", skip_negotiation=True)
    try:
        client.start()
        assert client.register(request_id)["status"] == "queued"
        deployment.free_slot()
        deployment.served(request_id, client.ready.get(timeout=TIMEOUT)["webSocketUrl"])
    finally:
        client.stop()


async def test_pysignalr(deployment: Deployment) -> None:
    request_id = await asyncio.to_thread(deployment.queue_request)
    client = PyClient(deployment.base + "/sessionHub", "json")
    ready: asyncio.Queue[Any] = asyncio.Queue()

    async def on_ready(args: list[Any]) -> None:
        await ready.put(args[0])

    client.client.on("SessionReady", on_ready)
    try:
        await client.start()
        assert (await client.invoke("Register", request_id))["status"] == "queued"
        await asyncio.to_thread(deployment.free_slot)
        event = await asyncio.wait_for(ready.get(), TIMEOUT)
        deployment.served(request_id, event["webSocketUrl"])
    finally:
        await client.stop()


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
async def test_official_client_sharing_its_pool_with_rest_requests(deployment: Deployment, transport: str) -> None:
    assert (NODE_SCRIPT.parent / "node_modules" / "@microsoft" / "signalr").is_dir(), \
        "run `npm ci` in tests/gateway/live/interop (scripts/test.sh does)"
    request_id = await asyncio.to_thread(deployment.queue_request)
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_SCRIPT), deployment.base, transport, request_id,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    seen: list[dict[str, Any]] = []

    async def next_event(name: str) -> dict[str, Any]:
        assert proc.stdout is not None
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
            if not line:
                stderr = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"node exited before {name!r}; saw {seen}; stderr {stderr.decode()}")
            seen.append(json.loads(line))
            assert seen[-1]["event"] != "error", seen
            if seen[-1]["event"] == name:
                return seen[-1]

    try:
        assert (await next_event("status"))["status"] == 200
        assert (await next_event("registered"))["result"]["status"] == "queued"
        await asyncio.to_thread(deployment.free_slot)
        deployment.served(request_id, (await next_event("ready"))["webSocketUrl"])
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- a pooled HTTP client, by hand ------------------------------------------------------------------


def _worker_of(token: str) -> str:
    match = PREFIXED_ID.match(token)
    assert match, token
    return match.group(1)


def _frames(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(part) for part in body.decode().split(RS) if part]


def test_long_polling_on_one_kept_alive_connection_across_workers(deployment: Deployment) -> None:
    """One HTTP/1.1 connection carries a REST request, then the polls and sends of two SignalR
    connections, one on each worker, interleaved: each request reaches the worker that holds its
    SignalR connection, and the connection is never closed on the way."""
    request_id = deployment.queue_request()
    first, second = deployment.fresh(), deployment.fresh()
    near = deployment.negotiate(first)["connectionToken"]  # the worker of the next-but-one fresh connection
    far = deployment.negotiate(second)["connectionToken"]
    assert {_worker_of(near), _worker_of(far)} == {"0", "1"}
    pooled = deployment.fresh()
    try:
        assert deployment.call("GET", "/healthz", conn=pooled)[0] == 200  # on the worker that owns `near`
        sock = pooled.sock
        for token in (far, near):  # the first polls: far is on the other worker
            assert deployment.call("GET", f"/sessionHub?id={token}", conn=pooled) == (200, b"")
            handshake = json.dumps({"protocol": "json", "version": 1}) + RS
            assert deployment.call("POST", f"/sessionHub?id={token}", handshake, conn=pooled)[0] == 200
            assert deployment.call("GET", f"/sessionHub?id={token}", conn=pooled) == (200, b"{}" + RS.encode())
        for number, token in enumerate((far, near), start=1):
            invocation = json.dumps({"type": 1, "invocationId": str(number), "target": "Register",
                                     "arguments": [request_id]}) + RS
            assert deployment.call("POST", f"/sessionHub?id={token}", invocation, conn=pooled)[0] == 200
            status, body = deployment.call("GET", f"/sessionHub?id={token}", conn=pooled)
            (completion,) = [f for f in _frames(body) if f["type"] == 3]
            assert completion["result"]["status"] == "queued", completion
        deployment.free_slot()
        urls = set()
        for token in (far, near):  # a server-sent event on each connection
            status, body = deployment.call("GET", f"/sessionHub?id={token}", conn=pooled)
            (event,) = [f for f in _frames(body) if f.get("target") == "SessionReady"]
            urls.add(event["arguments"][0]["webSocketUrl"])
        (url,) = urls
        deployment.served(request_id, url)
        for token in (far, near):
            assert deployment.call("DELETE", f"/sessionHub?id={token}", conn=pooled)[0] == 202
        assert pooled.sock is sock, "the kept-alive connection was closed on the way"
    finally:
        for conn in (first, second, pooled):
            conn.close()


def _read_response(stream: Any) -> tuple[int, bytes]:
    """One HTTP/1.1 response (Content-Length framed) from a buffered socket file."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return int(status_line.split()[1]), stream.read(length)


def _request(method: str, target: str, body: bytes = b"", headers: str = "") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def _read_head(stream: Any) -> int:
    status_line = stream.readline()
    while stream.readline() not in (b"\r\n", b""):
        pass
    return int(status_line.split()[1])


def test_pipelined_requests_for_both_workers(deployment: Deployment) -> None:
    """Requests pipelined in one write, for both workers, are each answered by the right one, in order."""
    first, second = deployment.fresh(), deployment.fresh()
    near = deployment.negotiate(first)["connectionToken"]
    far = deployment.negotiate(second)["connectionToken"]
    handshake = (json.dumps({"protocol": "json", "version": 1}) + RS).encode()
    pipeline = [
        _request("GET", "/healthz"),  # on the worker that owns `near`
        _request("GET", f"/sessionHub?id={far}"),
        _request("POST", f"/sessionHub?id={far}", handshake),
        _request("GET", f"/sessionHub?id={near}"),
        _request("POST", f"/sessionHub?id={near}", handshake),
        _request("GET", f"/sessionHub?id={far}"),
        _request("GET", f"/sessionHub?id={near}"),
        _request("GET", "/healthz"),
    ]
    try:
        with socket.create_connection(("127.0.0.1", deployment.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"".join(pipeline))
            stream = sock.makefile("rb")
            answers = [_read_response(stream) for _ in pipeline]
        ok = (200, b"")
        assert answers == [(200, b'{"status":"alive"}'), ok, ok, ok, ok, (200, b"{}\x1e"), (200, b"{}\x1e"),
                           (200, b'{"status":"alive"}')], answers
    finally:
        first.close()
        second.close()


def test_ids_of_no_worker_are_unknown(deployment: Deployment) -> None:
    """A token naming a worker that does not exist, or no worker, is an unknown id, kept alive or not."""
    pooled = deployment.fresh()
    try:
        assert deployment.call("GET", "/healthz", conn=pooled)[0] == 200
        for token in ("7.AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA", "99999999999999999999.x", "%D9%A3.x"):
            for conn in (pooled, None):
                assert deployment.call("GET", f"/sessionHub?id={token}", conn=conn) == (404, b"No Connection with that ID")
    finally:
        pooled.close()


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents"])
def test_streaming_transport_on_a_kept_alive_connection(deployment: Deployment, transport: str) -> None:
    """A WebSocket upgrade or an event stream, on a connection a REST request went to the other
    worker with, reaches its connection and carries its messages."""
    first, second = deployment.fresh(), deployment.fresh()
    deployment.negotiate(first)  # the next-but-one fresh connection reaches this worker
    far = deployment.negotiate(second)["connectionToken"]
    handshake = (json.dumps({"protocol": "json", "version": 1}) + RS).encode()
    try:
        with socket.create_connection(("127.0.0.1", deployment.port), timeout=TIMEOUT) as sock:
            stream = sock.makefile("rb")
            sock.sendall(_request("GET", "/healthz"))
            assert _read_response(stream) == (200, b'{"status":"alive"}')
            if transport == "WebSockets":
                sock.sendall(_request("GET", f"/sessionHub?id={far}", headers=(
                    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")))
                assert _read_head(stream) == 101
                mask = b"\x01\x02\x03\x04"
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(handshake))
                sock.sendall(bytes([0x81, 0x80 | len(handshake)]) + mask + masked)  # a masked text frame
                header = stream.read(2)
                assert header[0] == 0x81 and stream.read(header[1] & 0x7F) == b"{}" + RS.encode()
            else:
                sock.sendall(_request("GET", f"/sessionHub?id={far}", headers="Accept: text/event-stream\r\n"))
                assert _read_head(stream) == 200
                assert deployment.call("POST", f"/sessionHub?id={far}", handshake)[0] == 200
                seen = b""
                while b"data: {}" + RS.encode() not in seen:
                    chunk = stream.read1(4096)
                    assert chunk, seen
                    seen += chunk
    finally:
        first.close()
        second.close()


def test_a_restarted_worker_keeps_no_client_socket_of_the_parent(tmp_path: Path) -> None:
    """A worker started again while the parent holds a connection that has sent nothing yet must not
    keep a copy of that socket: the connection would then never close for its client."""
    with _running(tmp_path) as (running, proc):
        with socket.create_connection(("127.0.0.1", running.port), timeout=TIMEOUT) as silent:
            # Accepted in order: once a later connection is answered, the parent holds the silent one.
            assert running.call("GET", "/healthz")[0] == 200
            before = set(worker_pids(proc.pid))
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while len((after := set(worker_pids(proc.pid))) - before) < 1 or len(after) < 2:
                assert time.monotonic() < deadline, "the worker was not started again"
                time.sleep(0.05)  # another process's children: there is no event to wait on
            _wait_healthy(running, proc, tmp_path / "gateway.log")
            silent.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            received = b""
            while chunk := silent.recv(4096):  # up to the end of the stream: the worker closed it
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 OK") and received.endswith(b'{"status":"alive"}')
