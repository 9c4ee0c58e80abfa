"""Two ``serve`` commands on a Redis Cluster (one of them with two workers), started the way an operator starts them.

The connection string is the StackExchange.Redis form with ``cluster=true`` naming two seed nodes; the cluster
has three primaries with a replica each (:mod:`tests.harness.cluster`), the platform is the simulator in its
own process, with its own concurrency limit set to the gateways' cap, so that a session over the cap would be
refused there and counted. Visitors queue on both gateways and wait on their hubs; the primary owning the
deployment's slot is killed; every visitor is then served in turn, once, from the new owner.
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

from gateway.admission.keys import KeySpace
from gateway.redis.cluster import slot_of
from tests.harness.cluster import ClusterDeployment
from tests.harness.processes import ChildProcess
from tests.harness.redis_process import free_port
from tests.harness.session_hub import HubClient
from tests.harness.stack import API_TOKEN, WEBHOOK_TOKEN, base_config, session_body

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TIMEOUT = 20
SLOT = slot_of(KeySpace.for_store(cluster=True).hash_tag or "")


@pytest.fixture
def deployment() -> Iterator[ClusterDeployment]:
    with ClusterDeployment.running() as started:
        yield started


async def test_two_gateways_serve_a_queue_through_a_failover(deployment: ClusterDeployment, tmp_path: Any) -> None:
    ports, sim_port = (free_port(), free_port()), free_port()
    config = base_config(cap=1)
    config["RedisConnectionString"] = deployment.stackexchange
    config["VoiceAiPlatform"]["BaseUrl"] = f"http://127.0.0.1:{sim_port}/api/v1/"
    config_file = tmp_path / "appsettings.json"
    config_file.write_text(json.dumps(config))
    bases, sim = [f"http://127.0.0.1:{port}" for port in ports], f"http://127.0.0.1:{sim_port}"
    http = AsyncHTTPClient(force_instance=True)
    children: list[ChildProcess] = []
    hub_clients: list[HubClient] = []

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

    async def live() -> list[dict[str, Any]]:
        code, calls = await call(f"{sim}/_sim/calls")
        assert code == 200
        return calls["calls"]

    try:
        children.append(await ChildProcess.gateway(
            "simulator", "simulate-platform", "--port", str(sim_port), "--api-token", API_TOKEN,
            "--webhook-url", f"{bases[0]}/api/webhook/session-ended", "--webhook-token", WEBHOOK_TOKEN,
            ready="listening on"))
        assert (await call(f"{sim}/_sim/limit", "POST", {"limit": 1}))[0] == 200
        # B runs two workers (serve --processes 2): three gateway processes on the cluster in all.
        for name, port, workers in (("gateway-a", ports[0], "1"), ("gateway-b", ports[1], "2")):
            child = await ChildProcess.gateway(name, "serve", "--config", str(config_file), "--host", "127.0.0.1",
                                               "--port", str(port), "--processes", workers, ready="listening on")
            children.append(child)
            await asyncio.wait_for(child.line_containing(f"shared store: Redis cluster via 127.0.0.1:"
                                                         f"{deployment.nodes[0].port}"), TIMEOUT)
            assert (await call(f"http://127.0.0.1:{port}/readyz"))[0] == 200

        # One visitor is served (the cap is 1); three wait, on both gateways, each on a hub of the other one
        # than it asked, so that what reaches them crosses the sharded backplane.
        code, first = await call(f"{bases[0]}/api/session/request", "POST", session_body(clientIdentifier="first"))
        assert code == 200, first
        waiting = []
        for i in range(3):
            code, queued = await call(f"{bases[i % 2]}/api/session/request", "POST",
                                      session_body(clientIdentifier=f"waiting-{i}"))
            assert code == 202, queued
            waiting.append(queued["uniqueRequestId"])
            client = await HubClient.connect(bases[(i + 1) % 2])
            hub_clients.append(client)
            await client.register(queued["uniqueRequestId"])
        await asyncio.to_thread(deployment.wait_replicated, SLOT)

        old_port = deployment.kill_owner(SLOT)
        await asyncio.to_thread(deployment.wait_for_new_owner, SLOT, old_port)

        async def ready() -> bool:
            return all([(await call(f"{base}/readyz"))[0] == 200 for base in bases])

        await until(ready, "both gateways ready on the new owner")

        async def resubscribed() -> bool:
            subscribed = [sum("Subscribed to the Redis backplane" in line for line in child.lines)
                          for child in children[1:]]
            return subscribed[0] >= 2 and subscribed[1] >= 4  # once at start and once after, per process

        # Pub/sub is at-most-once: an outcome published while the other gateway's listener is still
        # reconnecting would not reach its hub clients (the hub has no replay of missed outcomes yet).
        await until(resubscribed, "both backplanes subscribed on the new owner")
        # Each session ends at the platform in turn; its webhook frees the slot on the new owner, and the next
        # waiting visitor gets it, on its hub, with the cap held throughout.
        for served, client in enumerate(hub_clients):
            (current,) = await live()
            assert (await call(f"{sim}/_sim/calls/{current['conversationSessionId']}/end", "POST"))[0] == 200
            _, ready_event = await client.next_event("SessionReady", timeout=TIMEOUT)
            assert ready_event["webSocketUrl"]
            for later, other in enumerate(hub_clients[served + 1:], start=1):
                await other.position(later)
            assert len(await live()) == 1
        assert not any(client.closed.is_set() for client in hub_clients)

        code, calls = await call(f"{sim}/_sim/calls?all=1")
        per_visitor = Counter(c["clientIdentifier"] for c in calls["calls"])
        assert per_visitor == Counter({f"{name}_127.0.0.1": 1 for name in ("first", "waiting-0", "waiting-1",
                                                                            "waiting-2")})
        code, stats = await call(f"{sim}/_sim/stats")
        assert stats["refused"] == 0, stats  # nothing over the cap reached the platform
    finally:
        for client in hub_clients:
            await client.close()
        http.close()
        for child in reversed(children):
            await child.stop()
            print(f"--- {child.name}\n" + "\n".join(child.lines[-40:]))  # shown when the test fails
