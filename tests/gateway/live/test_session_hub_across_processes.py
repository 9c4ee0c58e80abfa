"""The session hub across processes sharing one Redis.

Two gateways in one test process are two backplane servers (each its own lifetime manager, dispatcher
and hub): the request is made on A, the hub connection is on B, the webhook lands on A, and B's client
gets SessionReady. Then the real thing: ``iqra-gateway serve --processes 2`` as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from simulator.app import PlatformSimulator, make_simulator_app
from tests.harness.processes import serve_two_workers, wait_healthy
from tests.harness.redis_process import free_port
from tests.harness.session_hub import FAST, TIMEOUT, HubClient
from tests.harness.stack import API_TOKEN, WEBHOOK_TOKEN, base_config, conversation_id_of, session_body, start_hub_stack

pytestmark = pytest.mark.redis


async def test_two_gateways_one_redis(redis_url: str, redis_client: aioredis.Redis) -> None:
    config = base_config()
    config["RedisConnectionString"] = redis_url
    a = await start_hub_stack(redis_client, hub_tuning=FAST, config=config)
    # B's dispatcher only ticks hourly, so A serves the queue and the event must cross the backplane.
    b = await start_hub_stack(redis_client, hub_tuning=FAST, config=config, sim=a.sim, sim_url=a.sim_url,
                              dispatch_interval=3600)
    clients: list[HubClient] = []
    try:
        conversations = []
        for _ in range(2):
            response = await a.request_session()
            assert response.code == 200
            conversations.append(conversation_id_of(json.loads(response.body)["webSocketUrl"]))
        queued = []
        for _ in range(3):
            response = await a.request_session()
            assert response.code == 202
            queued.append(json.loads(response.body)["uniqueRequestId"])
        for i, rid in enumerate(queued):
            client = await HubClient.connect(b.base_url)
            clients.append(client)
            assert await client.register(rid) == {"status": "queued", "queuePosition": i + 1}
        # The simulator's webhook goes to A; A's dispatcher serves the entry; B's client hears it.
        assert (await a.end(conversations[0])).code == 200
        _, ready = await clients[0].next_event("SessionReady")
        assert ready["webSocketUrl"] == (await asyncio.wait_for(a.outcome(queued[0]), TIMEOUT)).web_socket_url
        assert not b.outcome(queued[0]).done()
        # B learns the new positions by itself, computed once (by B, which hosts the clients).
        await clients[1].position(1)
        await clients[2].position(2)
        # A client leaving on B frees its place for everyone, whoever serves the queue.
        assert "error" not in await clients[1].invoke("Leave", queued[1])
        await clients[2].position(1)
    finally:
        for client in clients:
            await client.close()
        await b.close()
        await a.close()


def _write_config(path: Path, *, redis_url: str, sim_port: int) -> None:
    config = base_config()
    config["RedisConnectionString"] = redis_url
    config["VoiceAiPlatform"]["BaseUrl"] = f"http://127.0.0.1:{sim_port}/api/v1/"
    path.write_text(json.dumps(config))


async def test_serve_processes_two_workers(redis_url: str, tmp_path: Path) -> None:
    gw_port = free_port()
    sim = PlatformSimulator(api_token=API_TOKEN, webhook_url=f"http://127.0.0.1:{gw_port}/api/webhook/session-ended",
                            webhook_token=WEBHOOK_TOKEN, call_seconds=None, webhook_retry_delays=(0.05, 0.1))
    sim_sockets = bind_sockets(0, "127.0.0.1")
    sim_server = HTTPServer(make_simulator_app(sim))
    sim_server.add_sockets(sim_sockets)
    config_path = tmp_path / "appsettings.json"
    _write_config(config_path, redis_url=redis_url, sim_port=sim_sockets[0].getsockname()[1])
    log_path = tmp_path / "gateway.log"
    proc = serve_two_workers(config_path, gw_port, log_path)
    http = AsyncHTTPClient(force_instance=True)
    base = f"http://127.0.0.1:{gw_port}"
    clients: list[HubClient] = []
    try:
        await wait_healthy(http, base, proc)

        async def request() -> dict:
            response = await http.fetch(base + "/api/session/request", method="POST",
                                        body=json.dumps(session_body()), raise_error=False,
                                        headers={"Content-Type": "application/json"})
            return {"code": response.code, **json.loads(response.body)}

        active = [await request() for _ in range(2)]
        assert [r["code"] for r in active] == [200, 200]
        queued = [await request() for _ in range(4)]
        assert [r["code"] for r in queued] == [202] * 4
        for i, entry in enumerate(queued):
            client = await HubClient.connect(base)
            clients.append(client)
            assert await client.register(entry["uniqueRequestId"]) == {"status": "queued", "queuePosition": i + 1}
        # Both workers host hub connections (tokens carry the worker index; the front routes by it).
        assert {client.token.split(".")[0] for client in clients} == {"0", "1"}
        ends = [await http.fetch(base + "/api/webhook/session-ended", method="POST", raise_error=False,
                                 headers={"X-Api-Token": WEBHOOK_TOKEN},
                                 body=json.dumps({"ConversationSessionId": conversation_id_of(r["webSocketUrl"])}))
                for r in active]
        assert [e.code for e in ends] == [200, 200]
        for client in clients[:2]:
            _, ready = await client.next_event("SessionReady")
            assert ready["webSocketUrl"].startswith("ws")
        await clients[2].position(1)
        await clients[3].position(2)
    finally:
        for client in clients:
            await client.close()
        http.close()
        proc.send_signal(signal.SIGTERM)
        try:
            # Waiting in a thread keeps this loop (the simulator, the clients' closes) running meanwhile.
            await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
        sim_server.stop()
        await sim.aclose()
        await sim_server.close_all_connections()
    assert proc.returncode == 0, log_path.read_text()


def test_embedded_store_refuses_processes(tmp_path: Path) -> None:
    config = base_config()
    config_path = tmp_path / "appsettings.json"
    config_path.write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(config_path), "--port", "0",
                             "--processes", "2"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--processes 2 needs a shared Redis" in result.stderr


async def _until(predicate, timeout: float = TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    """Wait for a state that has no event to await (a backplane's view of Redis), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_redis_outage_closes_nothing_and_delivery_resumes() -> None:
    from tests.harness.redis_process import RedisProcess

    server = RedisProcess(persistent=True)  # the queue survives the restart, as with a real deployment
    server.start()
    client = aioredis.Redis.from_url(server.url)
    config = base_config()
    config["RedisConnectionString"] = server.url
    a = await start_hub_stack(client, hub_tuning=FAST, config=config)
    b = await start_hub_stack(client, hub_tuning=FAST, config=config, sim=a.sim, sim_url=a.sim_url,
                              dispatch_interval=3600)
    clients: list[HubClient] = []
    try:
        conversations = []
        for _ in range(2):
            response = await a.request_session()
            conversations.append(conversation_id_of(json.loads(response.body)["webSocketUrl"]))
        queued = [json.loads((await a.request_session()).body)["uniqueRequestId"] for _ in range(2)]
        for rid in queued:
            hub_client = await HubClient.connect(b.base_url)
            clients.append(hub_client)
            await hub_client.register(rid)
        server.stop()
        await _until(lambda: not b.gateway.session_hub.lifetime.online)
        # The outage closes no connection; a Register meanwhile gets a clear error, not a disconnect.
        reply = await clients[1].invoke("Register", queued[1])
        assert reply["error"].endswith("HubException: The waiting queue is temporarily unavailable. "
                                       "Please try again shortly.")
        assert not any(c.closed.is_set() for c in clients)
        server.start()
        for stack in (a, b):
            await stack.gateway.session_hub.lifetime.wait_online(TIMEOUT)
        # Delivery resumes: the webhook on A reaches B's client through the re-established backplane.
        response = await a.end(conversations[0])
        if response.code == 503:  # the first command on a dead pooled socket; the platform retries too
            response = await a.end(conversations[0])
        assert response.code == 200
        _, ready = await clients[0].next_event("SessionReady")
        assert ready["webSocketUrl"].startswith("ws://")
        await clients[1].position(1)
    finally:
        for hub_client in clients:
            await hub_client.close()
        await b.close()
        await a.close()
        await client.aclose()
        server.close()


def test_front_routes_by_the_token_prefix() -> None:
    from gateway.cli.supervisor import token_prefix, worker_for

    assert token_prefix(3) == "3."
    assert worker_for(b"GET /sessionHub?id=1.AbC-_x HTTP/1.1\r\nHost: h\r\n", 2) == 1
    assert worker_for(b"POST /sessionHub?id=0.xyz&_=123 HTTP/1.1\r\n", 2) == 0
    assert worker_for(b"POST /sessionHub/negotiate?negotiateVersion=1 HTTP/1.1\r\n", 2) is None
    assert worker_for(b"GET /sessionHub?id=7.abc HTTP/1.1\r\n", 2) is None  # no such worker: any
    assert worker_for(b"GET /sessionHub?id=plain HTTP/1.1\r\n", 2) is None  # skip-negotiation id
    assert worker_for(b"garbage", 2) is None
