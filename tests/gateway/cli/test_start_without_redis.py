"""``iqra-gateway serve`` with its Redis down at start-up: it serves, says so once, keeps its log short
under a flood of refused requests, and recovers by itself when Redis comes.

The gateway is a real child process started as an operator would; the platform simulator runs in the
test's loop; Redis is a real ``redis-server`` started later on the port the configuration names.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import pytest
import ujson
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from simulator.app import PlatformSimulator, make_simulator_app
from tests.harness.paths import ROOT
from tests.harness.processes import ChildProcess
from tests.harness.redis_process import RedisProcess, free_port
from tests.harness.stack import API_TOKEN, WEBHOOK_TOKEN, base_config, session_body

pytestmark = [pytest.mark.redis, pytest.mark.slow]

START_TIMEOUT = 30
RECOVERY_TIMEOUT = 20
FLOOD = 2_000
CLEAR_MESSAGE = "is unreachable (connection refused); starting without the store: requests get 503 until it " \
                "answers, and the gateway recovers by itself"


class ServeProcess(ChildProcess):
    """The ``serve`` child; ``listening`` resolves once it listens."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__("serve", proc)
        self.listening = self.line_containing("listening on")

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)

    def problems(self) -> list[str]:
        return [line for line in self.lines if " WARNING " in line or " ERROR " in line]


@pytest.fixture
async def simulator():
    sockets = bind_sockets(0, "127.0.0.1")
    gateway_port = free_port()
    sim = PlatformSimulator(api_token=API_TOKEN, webhook_url=f"http://127.0.0.1:{gateway_port}/api/webhook/session-ended",
                            webhook_token=WEBHOOK_TOKEN, call_seconds=None)
    server = HTTPServer(make_simulator_app(sim))
    server.add_sockets(sockets)
    yield gateway_port, f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    server.stop()
    await sim.aclose()
    await server.close_all_connections()


@pytest.fixture
def redis_later():
    """A Redis on a port where nothing listens yet; the test starts it."""
    server = RedisProcess()
    yield server
    server.close()


@pytest.fixture
async def gateway(simulator, redis_later, tmp_path):
    gateway_port, sim_url = simulator
    config = base_config(cap=2)
    config["RedisConnectionString"] = redis_later.url
    config["VoiceAiPlatform"]["BaseUrl"] = f"{sim_url}/api/v1/"
    config_file = tmp_path / "appsettings.json"
    config_file.write_text(json.dumps(config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(config_file), "--host", "127.0.0.1",
        "--port", str(gateway_port), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    child = ServeProcess(proc)
    try:
        await asyncio.wait_for(asyncio.shield(child.listening), START_TIMEOUT)
        yield child, f"http://127.0.0.1:{gateway_port}"
    finally:
        await child.stop()


async def test_serve_starts_without_redis_says_so_once_stays_readable_and_recovers_alone(gateway, redis_later):
    child, base = gateway
    http = AsyncHTTPClient(force_instance=True, max_clients=50)

    async def call(method: str, path: str, body=None):
        payload = ujson.dumps(body) if body is not None else None
        return await http.fetch(base + path, method=method, body=payload, raise_error=False, request_timeout=20,
                                headers={"Content-Type": "application/json"} if body is not None else None)

    try:
        assert (await call("GET", "/healthz")).code == 200
        assert (await call("GET", "/readyz")).code == 503
        refused = await call("POST", "/api/session/request", session_body())
        assert refused.code == 503, refused.body
        assert int(refused.headers["Retry-After"]) > 0 and ujson.loads(refused.body)["message"]

        # A flood during the outage: every request refused, the log stays a few lines long.
        answers = await asyncio.gather(*(call("POST", "/api/session/request", session_body())
                                         for _ in range(FLOOD)))
        assert {a.code for a in answers} == {503}
        assert (await call("GET", "/readyz")).code == 503
        problems = child.problems()
        assert len(problems) < 50, f"{len(problems)} warning/error lines:\n" + "\n".join(problems[:80])
        assert child.count(CLEAR_MESSAGE) == 1, "\n".join(child.lines)

        redis_later.start()
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while (served := await call("POST", "/api/session/request", session_body())).code not in (200, 202):
            assert served.code == 503, served.body
            assert time.monotonic() < deadline, "no session served after Redis came:\n" + "\n".join(child.lines)
            await asyncio.sleep(0.1)
        assert (await call("GET", "/readyz")).code == 200
        assert child.count(CLEAR_MESSAGE) == 1
        assert child.count("answers now (version") == 1, "\n".join(child.lines)
    finally:
        http.close()
