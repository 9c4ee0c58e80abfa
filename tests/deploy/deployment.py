"""Three gateway instances behind a load balancer (``deploy/haproxy.cfg`` or ``deploy/nginx.conf``), as the
README sets them up, each part a
separate OS process started the way an operator would: a test-owned ``redis-server``, ``python -m gateway
simulate-platform``, ``python -m gateway serve`` for ``gw1`` and ``gw2``, ``serve --processes 2`` for ``gw3``
(so Instance.Id and the workers' prefixes compose: ``gw3.0.``, ``gw3.1.``), and ``haproxy`` or ``nginx`` in front.

Every instance reads one appsettings.json (cap 1, the shared Redis, the balancer as a known proxy) and gets
its ``Instance.Id`` from the environment (``Instance__Id``). The platform's webhook goes through the balancer.
"""

from __future__ import annotations

import contextlib
import json
import os
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

from tests.harness.haproxy import HAProxy
from tests.harness.nginx import Nginx
from tests.harness.paths import ROOT
from tests.harness.redis_process import RedisProcess
from tests.harness.stack import API_TOKEN, WEBHOOK_TOKEN, base_config, conversation_id_of, session_body

TIMEOUT = 15.0
INSTANCES = ("gw1", "gw2", "gw3")
#: Each part listens on a loopback address of its own: a port chosen free there cannot be taken meanwhile
#: by an outgoing connection (those leave from 127.0.0.1) or by another test run on 127.0.0.1.
BALANCER_HOST = "127.0.0.10"
SIM_HOST = "127.0.0.20"
HOSTS = {"gw1": "127.0.0.11", "gw2": "127.0.0.12", "gw3": "127.0.0.13"}
#: How many worker processes each instance runs.
PROCESSES = {"gw1": 1, "gw2": 1, "gw3": 2}


def instance_of(connection_id: str) -> str:
    """The Instance.Id a connection id or token starts with."""
    return connection_id.split(".", 1)[0]


@dataclass
class Gateway:
    instance: str
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Deployment:
    """The running deployment, reached through the balancer (``port``)."""

    port: int
    sim_port: int
    gateways: dict[str, Gateway]
    balancer: HAProxy | Nginx
    held: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{BALANCER_HOST}:{self.port}"

    def call(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
             at: tuple[str, int] | None = None, source: str | None = None) -> tuple[int, bytes]:
        """One request on a connection of its own (through the balancer unless ``at`` names another
        server; from the loopback address ``source`` when given)."""
        host, port = at or (BALANCER_HOST, self.port)
        conn = HTTPConnection(host, port, timeout=TIMEOUT, source_address=(source, 0) if source else None)
        try:
            payload = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
            sent = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers={**sent, **(headers or {})})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def negotiate(self) -> dict[str, Any]:
        status, body = self.call("POST", "/sessionHub/negotiate?negotiateVersion=1", b"")
        assert status == 200, (status, body)
        return json.loads(body)

    def live_calls(self) -> list[dict[str, Any]]:
        status, body = self.call("GET", "/_sim/calls?all=1", at=(SIM_HOST, self.sim_port))
        assert status == 200, body
        return json.loads(body)["calls"]

    def settle(self) -> None:
        """End every call still live and wait until the gateways heard of each end: no slot is held."""
        for call in self.live_calls():
            if call["state"] != "ended":
                self.call("POST", f"/_sim/calls/{call['conversationSessionId']}/end", b"", at=(SIM_HOST, self.sim_port))
        deadline = time.monotonic() + TIMEOUT
        while any(call["webhook"] in ("pending", "sending") or call["state"] != "ended" for call in self.live_calls()):
            # The simulator is another process; its webhook state gives no event to wait on.
            assert time.monotonic() < deadline, self.live_calls()
            time.sleep(0.05)
        self.held.clear()

    def hold_slot(self) -> None:
        """Take the only slot (a session answered 200 at once), so the next requests wait."""
        self.settle()
        status, body = self.call("POST", "/api/session/request", session_body())
        assert status == 200, (status, body)
        self.held.append(conversation_id_of(json.loads(body)["webSocketUrl"]))

    def queue_request(self) -> str:
        """A request that waits (202); its uniqueRequestId."""
        status, body = self.call("POST", "/api/session/request", session_body())
        assert status == 202, (status, body)
        return json.loads(body)["uniqueRequestId"]

    def free_slot(self) -> None:
        """The held session ends: the platform's webhook (through the balancer) frees its slot."""
        for conversation in self.held:
            status, body = self.call("POST", f"/_sim/calls/{conversation}/end", b"", at=(SIM_HOST, self.sim_port))
            assert status == 200, (status, body)
        self.held.clear()

    def logs(self) -> str:
        parts = [f"--- {name} ---\n{gw.log_path.read_text()}" for name, gw in self.gateways.items()]
        return "\n".join([*parts, "--- balancer ---", self.balancer.log()])


def _wait_ready(gateway: Gateway) -> None:
    """Until the instance answers /readyz on its own port (every worker of it: fresh connections rotate)."""
    deadline = time.monotonic() + 30
    answered = 0
    while answered < PROCESSES[gateway.instance]:
        assert gateway.proc.poll() is None, f"{gateway.instance} exited:\n" + gateway.log_path.read_text()
        assert time.monotonic() < deadline, f"{gateway.instance} is not ready:\n" + gateway.log_path.read_text()
        try:
            conn = HTTPConnection(gateway.host, gateway.port, timeout=5)
            conn.request("GET", "/readyz")
            answered += conn.getresponse().status == 200
            conn.close()
        except OSError:  # not listening yet: another process's port gives no event to wait on
            time.sleep(0.05)


def _wait_balanced(deployment: Deployment) -> None:
    """Until negotiating through the balancer has reached every instance (its checks have passed)."""
    deadline = time.monotonic() + 30
    seen: set[str] = set()
    while seen != set(INSTANCES):
        assert time.monotonic() < deadline, f"the balancer reached only {seen}:\n" + deployment.logs()
        seen.add(instance_of(deployment.negotiate()["connectionToken"]))


def _free_port(host: str) -> int:
    """A port free on ``host`` a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(tmp: Path, balancer_kind: str = "haproxy") -> Iterator[Deployment]:
    """The whole deployment behind ``haproxy`` or ``nginx``, stopped (and its Redis removed) afterwards."""
    redis = RedisProcess()
    redis.start()
    lb_port, sim_port = _free_port(BALANCER_HOST), _free_port(SIM_HOST)
    ports = {name: _free_port(HOSTS[name]) for name in INSTANCES}
    config = base_config(cap=1, ForwardedHeaders={"KnownProxies": ["127.0.0.1"]})
    config["RedisConnectionString"] = redis.url
    config["VoiceAiPlatform"]["BaseUrl"] = f"http://{SIM_HOST}:{sim_port}/api/v1/"
    (tmp / "appsettings.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sim: subprocess.Popen[bytes] | None = None
    gateways: dict[str, Gateway] = {}
    balancer = {"haproxy": HAProxy, "nginx": Nginx}[balancer_kind](
        tmp, host=BALANCER_HOST, port=lb_port, servers={name: f"{HOSTS[name]}:{port}" for name, port in ports.items()})
    try:
        with (tmp / "simulator.log").open("wb") as sim_log:
            sim = subprocess.Popen(
                [sys.executable, "-m", "gateway", "simulate-platform", "--host", SIM_HOST, "--port", str(sim_port),
                 "--api-token", API_TOKEN, "--webhook-token", WEBHOOK_TOKEN, "--call-seconds", "3600",
                 "--webhook-url", f"http://{BALANCER_HOST}:{lb_port}/api/webhook/session-ended"],
                cwd=ROOT, stdout=sim_log, stderr=subprocess.STDOUT, env=env)
        for name, port in ports.items():
            log_path = tmp / f"{name}.log"
            processes = ["--processes", str(PROCESSES[name])] if PROCESSES[name] > 1 else []
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "gateway", "--log-level", "info", "serve", "--config",
                     str(tmp / "appsettings.json"), "--host", HOSTS[name], "--port", str(port), *processes],
                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**env, "Instance__Id": name})
            gateways[name] = Gateway(name, HOSTS[name], port, proc, log_path)
        for gateway in gateways.values():
            _wait_ready(gateway)
        balancer.start()
        deployment = Deployment(port=lb_port, sim_port=sim_port, gateways=gateways, balancer=balancer)
        _wait_balanced(deployment)
        yield deployment
    finally:
        balancer.stop()
        for gateway in gateways.values():
            gateway.stop()
        if sim is not None:
            sim.terminate()
            sim.wait(10)
        redis.close()
