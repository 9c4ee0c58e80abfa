"""``serve --processes 2``: the scripted flow's requests reach both workers, and a scrape on either one
reports every worker's counters summed; a worker killed and started again loses nothing and counts nothing
twice, and its open hub connections leave the gauge.

The gateway is a real subprocess with ``/metrics`` on a port of its own behind a bearer token (both
workers accept on that one socket); Redis is the test's own, the platform simulator runs in the test.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from simulator.app import PlatformSimulator, make_simulator_app
from tests.harness.metrics import (
    ScriptedFlow,
    assert_flow_counted,
    assert_queue_state,
    flow_config,
    hub_connections,
    scrape,
    until,
)
from tests.harness.processes import serve_two_workers, terminate, wait_healthy, worker_pids
from tests.harness.redis_process import RedisProcess, free_port
from tests.harness.stack import API_TOKEN, WEBHOOK_TOKEN

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TOKEN = "scrape-secret"


def _metrics_dir(tmp: Path) -> Path:
    """The supervisor's private metrics directory (it makes it under TMPDIR, pointed at ``tmp`` here)."""
    made = list(tmp.glob("iqra-gateway-metrics-*"))
    assert len(made) == 1, made
    return made[0]


async def test_every_workers_counters_are_summed_and_survive_a_worker_restart(tmp_path, monkeypatch) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # inherited by the gateway: where its metrics directory goes
    redis_proc = RedisProcess()
    redis_proc.start()
    gw_port, metrics_port = free_port(), free_port()
    sim = PlatformSimulator(api_token=API_TOKEN, webhook_url=None, webhook_token=WEBHOOK_TOKEN, call_seconds=None)
    sim_sockets = bind_sockets(0, "127.0.0.1")
    sim_server = HTTPServer(make_simulator_app(sim))
    sim_server.add_sockets(sim_sockets)
    sim_url = f"http://127.0.0.1:{sim_sockets[0].getsockname()[1]}"
    config = flow_config(tmp_path)
    config["RedisConnectionString"] = redis_proc.url
    config["VoiceAiPlatform"]["BaseUrl"] = sim_url + "/api/v1/"
    config["Metrics"] = {"Port": metrics_port, "BearerToken": TOKEN}
    config_path = tmp_path / "appsettings.json"
    config_path.write_text(json.dumps(config))
    log_path = tmp_path / "gateway.log"
    proc = serve_two_workers(config_path, gw_port, log_path)
    http = AsyncHTTPClient(force_instance=True)
    base = f"http://127.0.0.1:{gw_port}"
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    flow = ScriptedFlow(http, base, sim_url)
    try:
        await wait_healthy(http, base, proc)
        assert (await http.fetch(base + "/metrics", raise_error=False)).code == 404  # not on the main port
        first, second = await flow.until_refusals()
        hub = await flow.register(first)
        for _ in range(2):  # whichever worker answers
            scraped = await scrape(http, url, **auth)
            assert_queue_state(scraped, queued=2, active=1)
            assert hub_connections(scraped) == 1

        await flow.leave_and_end(second, first)
        for _ in range(2):
            assert_flow_counted(await scrape(http, url, **auth))
        directory = _metrics_dir(temp)
        workers = worker_pids(proc.pid)
        # Both workers answered some of the flow's requests: each has its own counter file.
        assert {f"counter_{pid}.db" for pid in workers} <= {p.name for p in directory.iterdir()}

        victim = workers[int(hub.token.split(".", 1)[0])]  # the worker holding the hub connection
        os.kill(victim, signal.SIGKILL)

        async def restarted() -> bool:
            return len(set(worker_pids(proc.pid)) - set(workers)) == 1
        await until(restarted, "the supervisor starts the killed worker again")
        await wait_healthy(http, base, proc)
        assert not (directory / f"gauge_livesum_{victim}.db").exists()  # its live gauge left with it
        assert (directory / f"counter_{victim}.db").exists()  # its counts stay in the sum
        for _ in range(2):
            scraped = await scrape(http, url, **auth)
            assert_flow_counted(scraped)  # nothing lost with the worker, nothing counted twice by the new one
            assert hub_connections(scraped) == 0

        redis_proc.stop()
        await flow.ask("s", expect=503)
        down = await scrape(http, url, **auth)
        assert_flow_counted(down, store_unavailable=1)
        assert down.value("iqra_gateway_store_up") == 0
        redis_proc.start()
        assert terminate(proc, timeout=30) == 0, log_path.read_text()[-3000:]
        assert not directory.exists()  # the supervisor removes its directory on the way out
    finally:
        if flow.result.hub is not None:
            await flow.result.hub.close()
        http.close()
        terminate(proc)
        sim_server.stop()
        await sim.aclose()
        redis_proc.close()
