"""``serve --processes 2``: the admin API answers the same from either worker, a pause and a cap set through
one worker bind the other at once, and the snapshot's totals are every worker's counters summed.

The gateway is a real subprocess; Redis is the test's own, the platform simulator runs in the test (its
calls never end, so each served request keeps its slot).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from simulator.app import PlatformSimulator, make_simulator_app
from tests.harness.metrics import until
from tests.harness.processes import serve_two_workers, terminate, wait_healthy
from tests.harness.redis_process import RedisProcess, free_port
from tests.harness.stack import API_TOKEN, WEBHOOK_TOKEN, base_config, session_body

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def test_both_workers_obey_one_pause_and_one_cap_and_sum_their_totals(tmp_path) -> None:
    redis_proc = RedisProcess()
    redis_proc.start()
    sim = PlatformSimulator(api_token=API_TOKEN, webhook_url=None, webhook_token=WEBHOOK_TOKEN, call_seconds=None)
    sim_sockets = bind_sockets(0, "127.0.0.1")
    sim_server = HTTPServer(make_simulator_app(sim))
    sim_server.add_sockets(sim_sockets)
    config = base_config(cap=2)
    config["RedisConnectionString"] = redis_proc.url
    config["VoiceAiPlatform"]["BaseUrl"] = f"http://127.0.0.1:{sim_sockets[0].getsockname()[1]}/api/v1/"
    config["Admin"] = {"ApiToken": TOKEN}
    config_path = tmp_path / "appsettings.json"
    config_path.write_text(json.dumps(config))
    port = free_port()
    proc = serve_two_workers(config_path, port, tmp_path / "gateway.log")
    http = AsyncHTTPClient(force_instance=True)  # a connection per request: the front deals them to both workers
    base = f"http://127.0.0.1:{port}"

    async def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        payload = json.dumps(body).encode() if body is not None else (b"" if method in ("POST", "PUT") else None)
        response = await http.fetch(base + path, method=method, body=payload, headers=headers or AUTH,
                                    raise_error=False, request_timeout=20)
        return response.code, json.loads(response.body) if response.body else None

    async def view() -> dict[str, Any]:
        code, body = await call("GET", "/api/admin/queue")
        assert code == 200, body
        return body

    try:
        await wait_healthy(http, base, proc)
        assert (await call("POST", "/api/admin/dispatch/pause"))[0] == 200
        for n in range(4):  # two slots are free, and every worker queues them all
            code, body = await call("POST", "/api/session/request", session_body(clientIdentifier=f"c{n}"),
                                    headers={"Content-Type": "application/json"})
            assert code == 202, body
        for _ in range(4):  # whichever worker answers
            snapshot = await view()
            assert (snapshot["queueLength"], snapshot["paused"]) == (4, True)
            assert snapshot["totals"]["sessionRequests"]["queued"] == 4  # both workers' counts, summed
        code, body = await call("PUT", "/api/admin/capacity", {"maxConcurrentSessions": 3})
        assert (code, body) == (200, {"maxConcurrentSessions": 3, "source": "override"})
        assert (await call("POST", "/api/admin/dispatch/resume"))[0] == 200

        async def served_up_to_the_override() -> bool:
            snapshot = await view()
            return snapshot["sessions"]["active"] == 3 and snapshot["queueLength"] == 1
        await until(served_up_to_the_override, "three of the four waiting requests get a session")
        for _ in range(2):
            snapshot = await view()
            assert snapshot["cap"] == {"maxConcurrentSessions": 3, "source": "override"}
            assert [c["action"] for c in snapshot["recentChanges"]] == ["resume", "capacity", "pause"]
        assert terminate(proc, timeout=30) == 0
    finally:
        http.close()
        terminate(proc)
        sim_server.stop()
        await sim.aclose()
        redis_proc.close()
