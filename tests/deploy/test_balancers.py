"""``deploy/haproxy.cfg``, and ``deploy/nginx.conf``, each in front of three gateway instances sharing one
Redis (tests/deploy/deployment.py): REST and negotiate are spread round robin, every hub request reaches the
instance (and, under ``--processes``, the worker) that holds its connection, real SignalR clients go through
the whole queue flow, and when one instance stops its clients move to the others and keep their place."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deployment import INSTANCES, SIM_HOST, TIMEOUT, Deployment, instance_of, running
from tests.harness.haproxy import TEMPLATE as HAPROXY_TEMPLATE
from tests.harness.haproxy import haproxy_binary
from tests.harness.nginx import TEMPLATE as NGINX_TEMPLATE
from tests.harness.nginx import main_config as nginx_main_config
from tests.harness.nginx import nginx_binary
from tests.harness.paths import SESSION_HUB_CLIENTS
from tests.harness.python_clients import CoreClient, PyClient
from tests.harness.stack import conversation_id_of

pytestmark = [pytest.mark.redis, pytest.mark.interop, pytest.mark.slow]

RS = "\x1e"
WIDGET = SESSION_HUB_CLIENTS / "widget_flow.js"


@pytest.fixture(scope="module", params=["haproxy", "nginx"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with running(tmp_path_factory.mktemp(request.param), request.param) as running_deployment:
        yield running_deployment


def test_the_shipped_files_are_valid_as_they_are(tmp_path: Path) -> None:
    checked = subprocess.run([haproxy_binary(), "-c", "-f", str(HAPROXY_TEMPLATE)], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (tmp_path / "nginx.conf").write_text(nginx_main_config(tmp_path, NGINX_TEMPLATE))
    checked = subprocess.run([nginx_binary(), "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_negotiate_is_spread_and_every_hub_request_reaches_its_instance(deployment: Deployment) -> None:
    """Negotiations through the balancer land on every instance; then each connection's long polls, sends
    and its DELETE, through the balancer, find it (a request that reached another instance would be 404).
    gw3 runs two workers: two connections negotiated on fresh connections of its own (one per worker)
    are found too, whichever worker the balancer's pooled connection to gw3 reaches."""
    tokens = [deployment.negotiate()["connectionToken"] for _ in range(9)]
    assert {instance_of(token) for token in tokens} == set(INSTANCES)
    direct = [json.loads(deployment.call("POST", "/sessionHub/negotiate?negotiateVersion=1", b"",
                                         at=(deployment.gateways["gw3"].host, deployment.gateways["gw3"].port))[1])["connectionToken"] for _ in range(2)]
    assert sorted(token.split(".")[1] for token in direct) == ["0", "1"], direct
    tokens += direct
    handshake = json.dumps({"protocol": "json", "version": 1}) + RS
    for token in tokens:
        assert deployment.call("GET", f"/sessionHub?id={token}") == (200, b"")
        assert deployment.call("POST", f"/sessionHub?id={token}", handshake)[0] == 200
        assert deployment.call("GET", f"/sessionHub?id={token}") == (200, b"{}" + RS.encode())
        assert deployment.call("DELETE", f"/sessionHub?id={token}")[0] == 202


def test_the_gateways_see_the_visitors_address(deployment: Deployment) -> None:
    """The balancer adds X-Forwarded-For and the gateways trust it from the balancer (KnownProxies): the
    address they log, and count for per-IP limits, is the visitor's (127.0.0.2 here), not the balancer's."""
    probe = uuid.uuid4().hex
    assert deployment.call("GET", f"/healthz?probe={probe}", source="127.0.0.2")[0] == 200
    deadline = time.monotonic() + TIMEOUT
    while not (lines := [line for gateway in deployment.gateways.values()
                         for line in gateway.log_path.read_text().splitlines() if probe in line]):
        assert time.monotonic() < deadline, "no instance logged the request"
        time.sleep(0.05)  # another process's log file: no event to wait on
    (line,) = lines
    assert "ip=127.0.0.2 " in line, line


def test_a_token_of_no_instance_is_balanced_and_unknown(deployment: Deployment) -> None:
    for token in ("gw9.abc", "abc", "gw1.no-such-connection"):
        assert deployment.call("GET", f"/sessionHub?id={token}")[0] == 404


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
        assert (await widget.next("ready"))["webSocketUrl"].startswith(f"ws://{SIM_HOST}:")
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
        assert ready.get(timeout=TIMEOUT)["webSocketUrl"].startswith(f"ws://{SIM_HOST}:")
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
        assert (await asyncio.wait_for(ready.get(), TIMEOUT))["webSocketUrl"].startswith(f"ws://{SIM_HOST}:")
    finally:
        await client.stop()


# -- one instance stops mid-run (last: the deployment has one instance fewer afterwards) ------------------

VICTIM = "gw2"


class ReconnectingCore(CoreClient):
    """A signalrcore client over WebSockets with its automatic reconnect on, registering again after each
    reconnect, as a widget would."""

    def __init__(self, base: str, request_id: str) -> None:
        super().__init__(base + "/sessionHub", "web_sockets", automatic_reconnect={
            "type": "raw", "keep_alive_interval": 5, "reconnect_interval": 1, "max_attempts": 20})
        self.request_id = request_id
        self.registered: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.ready: queue.Queue[Any] = queue.Queue()
        self.hub.on_reconnect(self.register)
        self.hub.on("SessionReady", lambda args: self.ready.put(args[0]))

    @property
    def connection_id(self) -> str:
        return self.hub.transport.connection_id

    def start_and_register(self) -> tuple[str, Any]:
        self.start()
        self.register()
        return self.next_registration()

    def register(self) -> None:
        connection_id = self.connection_id  # the connection this Register goes on
        self.hub.send("Register", [self.request_id],
                      on_invocation=lambda message: self.registered.put((connection_id, message.result)))

    def next_registration(self, timeout: float = TIMEOUT) -> tuple[str, Any]:
        return self.registered.get(timeout=timeout)


def _rotate_to(deployment: Deployment, instance: str) -> None:
    """Negotiate through the balancer until one lands on ``instance``: the round robin's next request goes
    to the server after it (a probe's connection, never used, is removed)."""
    for _ in range(2 * len(INSTANCES)):
        token = deployment.negotiate()["connectionToken"]
        deployment.call("DELETE", f"/sessionHub?id={token}")  # routed by its id: not counted by the rotation
        if instance_of(token) == instance:
            return
    raise AssertionError(f"the balancer never chose {instance}")


async def _place(deployment: Deployment, transport: str, widgets: list[Widget]) -> Widget:
    """A waiting widget whose hub connection is on the victim (others it started on the way keep waiting).

    A widget makes a few balanced requests before its negotiate (the session request); each attempt lines
    the round robin up one server further, so one of three attempts puts its negotiate on the victim."""
    victim = INSTANCES.index(VICTIM)
    for attempt in range(2 * len(INSTANCES)):
        await asyncio.to_thread(_rotate_to, deployment, INSTANCES[(victim - 2 - attempt) % len(INSTANCES)])
        widget = await Widget.start(deployment.base, transport)
        widgets.append(widget)
        assert (await widget.next("response"))["status"] == 202
        registered = await widget.next("registered")
        assert registered["result"]["status"] == "queued"
        if instance_of(registered["connectionId"]) == VICTIM:
            return widget
    landed = [first_registration(w)["connectionId"] for w in widgets]
    raise AssertionError(f"no {transport} widget landed on {VICTIM}: {landed}")


def _place_core(deployment: Deployment) -> tuple[ReconnectingCore, dict[str, Any]]:
    """A waiting signalrcore client on the victim, as :func:`_place` (misplaced ones leave the queue)."""
    victim = INSTANCES.index(VICTIM)
    for attempt in range(2 * len(INSTANCES)):
        _rotate_to(deployment, INSTANCES[(victim - 2 - attempt) % len(INSTANCES)])
        request_id = deployment.queue_request()
        core = ReconnectingCore(deployment.base, request_id)
        connection, result = core.start_and_register()
        assert result["status"] == "queued", result
        if instance_of(connection) == VICTIM:
            return core, result
        core.stop()
        assert deployment.call("DELETE", f"/api/session/request/{request_id}")[0] == 200
    raise AssertionError(f"no signalrcore client landed on {VICTIM}")


class ReconnectingPy(PyClient):
    """A pysignalr client (WebSockets; it negotiates again by itself after losing its connection), told
    of each reopening so that it registers again."""

    def __init__(self, base: str, request_id: str) -> None:
        super().__init__(base + "/sessionHub", "json")
        self.request_id = request_id
        self.reopened: asyncio.Queue[None] = asyncio.Queue()
        self.ready: asyncio.Queue[Any] = asyncio.Queue()

        async def on_open() -> None:
            if self.opened.is_set():
                await self.reopened.put(None)
            self.opened.set()

        async def on_ready(args: list[Any]) -> None:
            await self.ready.put(args[0])

        self.client.on_open(on_open)
        self.client.on("SessionReady", on_ready)

    @property
    def connection_id(self) -> str:
        return self.client._transport._url.rpartition("id=")[2]  # negotiate version 0: the id is the token


async def _place_py(deployment: Deployment) -> tuple[ReconnectingPy, dict[str, Any]]:
    """A waiting pysignalr client on the victim, as :func:`_place` (misplaced ones leave the queue)."""
    victim = INSTANCES.index(VICTIM)
    for attempt in range(2 * len(INSTANCES)):
        await asyncio.to_thread(_rotate_to, deployment, INSTANCES[(victim - 2 - attempt) % len(INSTANCES)])
        request_id = await asyncio.to_thread(deployment.queue_request)
        client = ReconnectingPy(deployment.base, request_id)
        await client.start()
        result = await client.invoke("Register", request_id)
        assert result["status"] == "queued", result
        if instance_of(client.connection_id) == VICTIM:
            return client, result
        await client.stop()
        assert (await asyncio.to_thread(deployment.call, "DELETE", f"/api/session/request/{request_id}"))[0] == 200
    raise AssertionError(f"no pysignalr client landed on {VICTIM}")


async def test_an_instance_stops_and_its_clients_reconnect_elsewhere_keeping_their_place(deployment: Deployment) -> None:
    """SIGTERM to one instance while clients wait: it closes its hub connections allowing reconnects; its
    clients negotiate again through the balancer, land on the other instances and Register again with the
    place they had; nobody else notices; then the queue drains in order."""
    await asyncio.to_thread(deployment.hold_slot)
    widgets: list[Widget] = []
    core: ReconnectingCore | None = None
    py: ReconnectingPy | None = None
    try:
        victims = [await _place(deployment, transport, widgets)
                   for transport in ("WebSockets", "ServerSentEvents", "LongPolling")]
        places = {id(w): (first_registration(w))["result"]["queuePosition"] for w in widgets}
        assert sorted(places.values()) == list(range(1, len(widgets) + 1))
        # The Python clients wait last (nothing hangs up their sessions for the next one), on the victim too.
        core, core_result = await asyncio.to_thread(_place_core, deployment)
        assert core_result == {"status": "queued", "queuePosition": len(widgets) + 1}
        py, py_result = await _place_py(deployment)
        assert py_result == {"status": "queued", "queuePosition": len(widgets) + 2}

        assert await asyncio.to_thread(deployment.gateways[VICTIM].stop) == 0, deployment.logs()

        for widget in victims:
            await widget.next("reconnecting")
            again = await widget.next("registered", timeout=30)
            assert again["again"] is True and instance_of(again["connectionId"]) != VICTIM, again
            assert again["result"] == {"status": "queued", "queuePosition": places[id(widget)]}, again
        for widget in widgets:
            if widget not in victims:
                assert not any(event["event"] == "reconnecting" for event in widget.seen), widget.seen
        connection, result = await asyncio.to_thread(core.next_registration, 30)
        assert instance_of(connection) != VICTIM
        assert result == {"status": "queued", "queuePosition": len(widgets) + 1}
        await asyncio.wait_for(py.reopened.get(), 30)
        assert instance_of(py.connection_id) != VICTIM
        assert await py.invoke("Register", py.request_id) == {"status": "queued", "queuePosition": len(widgets) + 2}

        # Each widget hangs up after its audio, which frees the slot for the next one: FIFO throughout.
        await asyncio.to_thread(deployment.free_slot)
        readies = [await widget.next("ready", timeout=30) for widget in widgets]
        order = sorted(widgets, key=lambda w: readies[widgets.index(w)]["at"])
        assert [places[id(w)] for w in order] == sorted(places.values())
        for widget in widgets:
            await widget.next("done")
        core_ready = await asyncio.to_thread(core.ready.get, True, 30)
        deployment.held.append(conversation_id_of(core_ready["webSocketUrl"]))
        await asyncio.to_thread(deployment.free_slot)
        assert (await asyncio.wait_for(py.ready.get(), 30))["webSocketUrl"].startswith(f"ws://{SIM_HOST}:")
    finally:
        for widget in widgets:
            await widget.close()
        if core is not None:
            await asyncio.to_thread(core.stop)
        if py is not None:
            await py.stop()


def first_registration(widget: Widget) -> dict[str, Any]:
    """The first registration a widget reported."""
    return next(event for event in widget.seen if event["event"] == "registered")
