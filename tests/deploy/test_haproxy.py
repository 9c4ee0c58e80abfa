"""``deploy/haproxy.cfg`` in front of three gateway instances sharing one Redis (tests/deploy/deployment.py):
REST and negotiate are spread round robin, every hub request reaches the instance (and, under ``--processes``,
the worker) that holds its connection, and real SignalR clients go through the whole queue flow."""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.deployment import INSTANCES, TIMEOUT, Deployment, instance_of, running
from tests.harness.haproxy import TEMPLATE, haproxy_binary
from tests.harness.paths import SESSION_HUB_CLIENTS
from tests.harness.python_clients import CoreClient, PyClient

pytestmark = [pytest.mark.redis, pytest.mark.interop, pytest.mark.slow]

RS = "\x1e"
WIDGET = SESSION_HUB_CLIENTS / "widget_flow.js"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running(tmp_path_factory.mktemp("haproxy")) as running_deployment:
        yield running_deployment


def test_the_shipped_file_is_valid_as_it_is() -> None:
    import subprocess

    checked = subprocess.run([haproxy_binary(), "-c", "-f", str(TEMPLATE)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_negotiate_is_spread_and_every_hub_request_reaches_its_instance(deployment: Deployment) -> None:
    """Fresh negotiations land on every instance (and both workers of gw3); then each connection's long
    polls, sends and its DELETE, on connections of their own through the balancer, find it (a request that
    reached another instance would be 404)."""
    tokens = [deployment.negotiate()["connectionToken"] for _ in range(12)]
    assert {instance_of(token) for token in tokens} == set(INSTANCES)
    assert {token.split(".")[1] for token in tokens if token.startswith("gw3.")} == {"0", "1"}
    handshake = json.dumps({"protocol": "json", "version": 1}) + RS
    for token in tokens:
        assert deployment.call("GET", f"/sessionHub?id={token}") == (200, b"")
        assert deployment.call("POST", f"/sessionHub?id={token}", handshake)[0] == 200
        assert deployment.call("GET", f"/sessionHub?id={token}") == (200, b"{}" + RS.encode())
        assert deployment.call("DELETE", f"/sessionHub?id={token}")[0] == 202


def test_a_token_of_no_instance_is_balanced_and_unknown(deployment: Deployment) -> None:
    for token in ("gw9.abc", "abc", "gw1.no-such-connection"):
        assert deployment.call("GET", f"/sessionHub?id={token}")[0] == 404


def test_health_checks_and_forwarded_for(deployment: Deployment) -> None:
    assert deployment.call("GET", "/readyz")[0] == 200
    # The gateways trust the balancer's X-Forwarded-For (KnownProxies): the visitor's address is what
    # they count; a per-IP cap would otherwise see every visitor as the balancer.
    assert "option forwardfor" in TEMPLATE.read_text()


# -- the official JS client -----------------------------------------------------------------------------


class Widget:
    """``widget_flow.js`` (the official widget's flow with ``@microsoft/signalr``) as a subprocess; its JSON
    lines are its events, read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[dict[str, Any]] = []
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, base: str, transport: str) -> Widget:
        assert (WIDGET.parent / "node_modules" / "@microsoft" / "signalr").is_dir(), \
            "run `npm ci` in tests/gateway/live/interop (scripts/test.sh does)"
        proc = await asyncio.create_subprocess_exec("node", str(WIDGET), base, transport, "json",
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            event = json.loads(line)
            event["at"] = asyncio.get_running_loop().time()
            self.seen.append(event)
            await self.events.put(event)
        await self.events.put(None)

    async def next(self, name: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        while True:
            event = await asyncio.wait_for(self.events.get(), timeout)
            if event is None:
                stderr = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"node exited before {name!r}; saw {self.seen}; stderr {stderr.decode()}")
            assert event["event"] != "error", self.seen
            if event["event"] == name:
                return event

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
async def test_official_client(deployment: Deployment, transport: str) -> None:
    await asyncio.to_thread(deployment.hold_slot)
    widget = await Widget.start(deployment.base, transport)
    try:
        assert (await widget.next("response"))["status"] == 202
        registered = await widget.next("registered")
        assert registered["result"] == {"status": "queued", "queuePosition": 1}
        assert instance_of(registered["connectionId"]) in INSTANCES
        await asyncio.to_thread(deployment.free_slot)
        assert (await widget.next("ready"))["webSocketUrl"].startswith("ws://127.0.0.1:")
        await widget.next("done")  # and the audio WebSocket to the platform carried frames
        assert await asyncio.wait_for(widget.proc.wait(), TIMEOUT) == 0
    finally:
        await widget.close()


# -- the Python clients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["web_sockets", "long_polling"])
def test_signalrcore(deployment: Deployment, transport: str) -> None:
    deployment.hold_slot()
    request_id = deployment.queue_request()
    client = CoreClient(deployment.base + "/sessionHub", transport)
    ready: queue.Queue[Any] = queue.Queue()
    client.hub.on("SessionReady", lambda args: ready.put(args[0]))
    try:
        client.start()
        assert client.invoke("Register", request_id) == {"status": "queued", "queuePosition": 1}
        deployment.free_slot()
        assert ready.get(timeout=TIMEOUT)["webSocketUrl"].startswith("ws://127.0.0.1:")
    finally:
        client.stop()


async def test_pysignalr(deployment: Deployment) -> None:
    await asyncio.to_thread(deployment.hold_slot)
    request_id = await asyncio.to_thread(deployment.queue_request)
    client = PyClient(deployment.base + "/sessionHub", "json")
    ready: asyncio.Queue[Any] = asyncio.Queue()

    async def on_ready(args: list[Any]) -> None:
        await ready.put(args[0])

    client.client.on("SessionReady", on_ready)
    try:
        await client.start()
        assert await client.invoke("Register", request_id) == {"status": "queued", "queuePosition": 1}
        await asyncio.to_thread(deployment.free_slot)
        assert (await asyncio.wait_for(ready.get(), TIMEOUT))["webSocketUrl"].startswith("ws://127.0.0.1:")
    finally:
        await client.stop()
