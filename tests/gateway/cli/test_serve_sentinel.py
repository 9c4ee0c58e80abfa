"""``serve --processes 2`` on a Redis behind Sentinel, started the way an operator starts it.

The connection string is the StackExchange.Redis form with ``serviceName``; the store is a primary, a replica
and three sentinels (:mod:`tests.harness.sentinel`), the platform the simulator in its own process. The
gateway's start-up checks go through the sentinels, it serves, and after the primary is killed it serves again
from the promoted replica: the queued request is dispatched once, from the new primary.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import ujson
from tornado.httpclient import AsyncHTTPClient

from tests.harness.processes import ChildProcess
from tests.harness.redis_process import free_port
from tests.harness.sentinel import SentinelDeployment
from tests.harness.stack import API_TOKEN, WEBHOOK_TOKEN, base_config, session_body

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TIMEOUT = 20


@pytest.fixture
def deployment() -> Iterator[SentinelDeployment]:
    with SentinelDeployment.running() as started:
        yield started




async def test_serve_with_two_workers_follows_a_failover(deployment: SentinelDeployment, tmp_path: Any) -> None:
    port, sim_port = free_port(), free_port()
    config = base_config(cap=1)
    config["RedisConnectionString"] = deployment.stackexchange
    config["VoiceAiPlatform"]["BaseUrl"] = f"http://127.0.0.1:{sim_port}/api/v1/"
    config_file = tmp_path / "appsettings.json"
    config_file.write_text(json.dumps(config))
    base, sim = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}"
    http = AsyncHTTPClient(force_instance=True)
    children: list[ChildProcess] = []

    async def call(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        payload = ujson.dumps(body) if body is not None else (b"" if method == "POST" else None)
        response = await http.fetch(url, method=method, body=payload, raise_error=False, request_timeout=TIMEOUT,
                                    headers={"Content-Type": "application/json"})
        return response.code, (json.loads(response.body) if response.body else None)

    async def until(condition: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not await condition():
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
            await asyncio.sleep(0.05)

    try:
        children.append(await ChildProcess.gateway(
            "simulator", "simulate-platform", "--port", str(sim_port), "--api-token", API_TOKEN,
            "--webhook-url", f"{base}/api/webhook/session-ended", "--webhook-token", WEBHOOK_TOKEN,
            ready="listening on"))
        gateway = await ChildProcess.gateway("gateway", "serve", "--config", str(config_file), "--host", "127.0.0.1",
                               "--port", str(port), "--processes", "2", ready="listening on")
        children.append(gateway)
        await asyncio.wait_for(gateway.line_containing("shared store: Redis service 'mymaster' via sentinels"), TIMEOUT)
        assert (await call(f"{base}/readyz"))[0] == 200

        code, first = await call(f"{base}/api/session/request", "POST", session_body(clientIdentifier="first"))
        assert code == 200, first
        code, queued = await call(f"{base}/api/session/request", "POST", session_body(clientIdentifier="second"))
        assert code == 202, queued
        request_id = queued["uniqueRequestId"]
        # Everything so far is on the replica (what a failover can lose is tests/gateway/redis/test_replica_wait.py's).
        await asyncio.to_thread(deployment.wait_replicated)

        old_port = deployment.kill_primary()
        await asyncio.to_thread(deployment.wait_for_new_primary, old_port)

        async def ready() -> bool:  # both workers reach the new primary (each answers some of these)
            return all([(await call(f"{base}/readyz"))[0] == 200 for _ in range(6)])

        await until(ready, "the gateway ready on the new primary")
        # The session ends at the platform; its webhook frees the slot on the new primary, and the queued
        # request gets it.
        code, calls = await call(f"{sim}/_sim/calls")
        (live,) = calls["calls"]
        assert (await call(f"{sim}/_sim/calls/{live['conversationSessionId']}/end", "POST"))[0] == 200

        async def served() -> bool:
            code, status = await call(f"{base}/api/session/status/{request_id}")
            assert code == 200 and status["status"] in ("queued", "ready"), (code, status)
            return status["status"] == "ready"

        await until(served, "the queued request served after the failover")
        code, calls = await call(f"{sim}/_sim/calls?all=1")
        per_visitor = Counter(c["clientIdentifier"] for c in calls["calls"])
        assert per_visitor == Counter({"first_127.0.0.1": 1, "second_127.0.0.1": 1})
    finally:
        http.close()
        for child in reversed(children):
            await child.stop()
