"""The gateway on a Redis behind Sentinel, with real processes: a primary, a replica and three sentinels.

The gateway finds the primary through the sentinels, serves through them, and follows a failover: the primary
is killed (SIGKILL) while clients wait on the hub and requests keep arriving. Requests meanwhile get 503 with
``Retry-After`` and succeed after the switch; the waiting clients keep their hub connections (on two gateways,
so that the SignalR backplane has to resubscribe on the new primary) and get their ``SessionReady``; no request
gets two platform sessions.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from gateway.config import parse_redis_connection_string
from gateway.queue.events import SessionReady
from gateway.redis.client import check_redis_version, open_redis, run_script
from gateway.redis.sentinel import SentinelPool
from tests.harness.redis_process import RedisProcess
from tests.harness.sentinel import SentinelDeployment
from tests.harness.session_hub import FAST, TIMEOUT, HubClient
from tests.harness.stack import Stack, base_config, conversation_id_of, session_body, start_hub_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def deployment() -> Iterator[SentinelDeployment]:
    with SentinelDeployment.running() as started:
        yield started


async def _poll(condition: Any, what: str, timeout: float = 30.0) -> None:
    """Wait until ``condition()`` (a bool, or an awaitable of one) holds, checking every 50 ms."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(0.05)


async def _ready(stack: Stack) -> bool:
    return (await stack.call("GET", "/readyz")).code == 200


async def test_the_store_client_reaches_the_primary_the_sentinels_name(deployment: SentinelDeployment) -> None:
    client = open_redis(deployment.url)
    try:
        assert isinstance(client.connection_pool, SentinelPool)
        await check_redis_version(client)  # serve's start-up check, through the sentinels
        assert client.connection_pool.gate.verified
        await client.set("where", "primary")
        info = await client.info("server")
        assert info["tcp_port"] == deployment.primary.port
    finally:
        await client.aclose()


async def test_after_a_failover_scripts_load_again_on_the_new_primary(
        deployment: SentinelDeployment, caplog: pytest.LogCaptureFixture) -> None:
    client = open_redis(deployment.url)
    try:
        script = client.register_script("return redis.call('INCR', KEYS[1])")
        assert await run_script(client, script, ["counter"], []) == 1
        await asyncio.to_thread(deployment.wait_replicated)
        with redis.Redis(port=deployment.replica.port) as replica:
            # SCRIPT LOAD is not replicated: the promoted replica answers the first EVALSHA with NOSCRIPT.
            assert replica.script_exists(script.sha) == [False]
        old_port = deployment.kill_primary()
        await asyncio.to_thread(deployment.wait_for_new_primary, old_port)

        async def counted() -> bool:
            try:
                return await run_script(client, script, ["counter"], []) == 2
            except redis.ConnectionError:
                return False  # a connection to the dead primary, or sentinels not agreed yet: 503 territory

        await _poll(counted, "the script run on the new primary")
        assert client.connection_pool.gate.verified  # the version was checked again there
        moved = [r.getMessage() for r in caplog.records if "moved from" in r.getMessage()]
        assert moved == [f"Redis primary of service 'mymaster' via sentinels {deployment.url.split('//')[1].split('/')[0]} "
                         f"moved from 127.0.0.1:{old_port} to 127.0.0.1:{deployment.replica.port} (a Sentinel "
                         "failover); connections follow it"]
    finally:
        await client.aclose()


async def test_with_no_sentinel_answering_the_gateway_starts_without_the_store(
        caplog: pytest.LogCaptureFixture) -> None:
    nobody = RedisProcess()  # a port nobody listens on
    client = open_redis(f"redis+sentinel://127.0.0.1:{nobody.port}/mymaster")
    try:
        await check_redis_version(client)
        assert not client.connection_pool.gate.verified
        assert any("starting without the store" in r.getMessage() and "No master found" in r.getMessage()
                   for r in caplog.records)
    finally:
        await client.aclose()
        nobody.close()


async def _two_gateways(connection_string: str, *, wait: bool) -> tuple[Stack, Stack, list[Any]]:
    config = base_config(Queue={"RegisterTimeoutSeconds": 60, "DisconnectGraceSeconds": 45})
    if wait:  # after the failover no replica is left: every such write waits its 200 ms and goes on
        config["Redis"] = {"WaitForReplicas": 1}
    config["RedisConnectionString"] = connection_string  # the backplane follows the sentinels too
    url = parse_redis_connection_string(connection_string)
    clients = [open_redis(url), open_redis(url)]
    a = await start_hub_stack(clients[0], hub_tuning=FAST, config=config)
    b = await start_hub_stack(clients[1], hub_tuning=FAST, config=config, sim=a.sim, sim_url=a.sim_url)
    return a, b, clients


class Arrivals:
    """Requests arriving one after another at both gateways, each from its own visitor (``clientIdentifier``)."""

    def __init__(self, *stacks: Stack) -> None:
        self.stacks = stacks
        self.responses: list[tuple[float, int, str | None, Any]] = []  # (time, code, Retry-After, body)
        self.stopped = asyncio.Event()
        self._count = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self.stopped.is_set():
            stack = self.stacks[self._count % len(self.stacks)]
            self._count += 1
            response = await stack.request_session(session_body(clientIdentifier=f"arrival-{self._count}"))
            body = json.loads(response.body) if response.body else None
            self.responses.append((time.monotonic(), response.code, response.headers.get("Retry-After"), body))
            await asyncio.sleep(0.05)

    def succeeded_since(self, moment: float) -> int:
        return sum(1 for at, code, _, _ in self.responses if at > moment and code in (200, 202))

    async def stop(self) -> None:
        self.stopped.set()
        await self._task


@pytest.mark.parametrize("wait", [False, True], ids=["no-wait", "wait-for-replicas"])
async def test_a_failover_answers_503_meanwhile_and_keeps_every_waiting_client(
        deployment: SentinelDeployment, wait: bool) -> None:
    a, b, clients = await _two_gateways(deployment.stackexchange, wait=wait)
    hub_clients: list[HubClient] = []
    arrivals: Arrivals | None = None
    try:
        # The cap (2) is taken; four visitors wait, on B and A in turn: B serves no dispatch, so the
        # SessionReady of B's clients crosses the backplane from A.
        await b.gateway.dispatcher.stop()
        conversations = []
        for i in range(2):
            response = await a.request_session(session_body(clientIdentifier=f"first-{i}"))
            assert response.code == 200, response.body
            conversations.append(conversation_id_of(json.loads(response.body)["webSocketUrl"]))
        waiting = []
        for i in range(4):
            response = await a.request_session(session_body(clientIdentifier=f"waiting-{i}"))
            assert response.code == 202, response.body
            waiting.append(json.loads(response.body)["uniqueRequestId"])
        for i, request_id in enumerate(waiting):
            client = await HubClient.connect((b, a)[i % 2].base_url)
            hub_clients.append(client)
            await client.register(request_id)
        for stack in (a, b):
            assert stack.gateway.session_hub.lifetime.online
        # Everything so far is on the replica: what a failover can lose is for another test.
        await asyncio.to_thread(deployment.wait_replicated)

        arrivals = Arrivals(a, b)
        await _poll(lambda: arrivals.succeeded_since(0) >= 2, "requests before the failover")
        old_port = deployment.kill_primary()
        killed_at = time.monotonic()
        new_port = await asyncio.to_thread(deployment.wait_for_new_primary, old_port)
        assert new_port == deployment.replica.port
        for stack in (a, b):
            await _poll(lambda stack=stack: _ready(stack), "the gateway ready on the new primary")
        switched_at = time.monotonic()
        await _poll(lambda: arrivals.succeeded_since(switched_at) >= 4,
                    "requests served after the failover")
        await arrivals.stop()

        during = [r for r in arrivals.responses if killed_at < r[0] <= switched_at]
        assert any(code == 503 for _, code, _, _ in during), "no request met the switch"
        for _, code, retry_after, body in arrivals.responses:
            assert code in (200, 202, 503), (code, body)
            if code == 503:
                assert retry_after is not None and int(retry_after) > 0 and body["message"]
        assert all(code == 202 for at, code, _, _ in arrivals.responses if at > switched_at)

        # The backplane came back on the new primary for both gateways; nobody was disconnected.
        for stack in (a, b):
            await stack.gateway.session_hub.lifetime.wait_online(TIMEOUT)
        # The two sessions end: the first two waiting visitors (one on each gateway) get their sessions.
        for conversation in conversations:
            assert (await a.end(conversation)).code == 200
        for client in hub_clients[:2]:
            _, ready = await client.next_event("SessionReady", timeout=TIMEOUT)
            assert ready["webSocketUrl"]
        for position, client in enumerate(hub_clients[2:], start=1):
            await client.position(position)
            assert client.received("SessionReady") == []
        assert not any(client.closed.is_set() for client in hub_clients)
        for request_id in waiting[:2]:
            assert isinstance(await asyncio.wait_for(a.outcome(request_id), TIMEOUT), SessionReady)

        # No visitor got two platform sessions; only those served got one.
        per_visitor = collections.Counter(call.client_identifier for call in a.sim.calls.values())
        assert set(per_visitor.values()) == {1}, per_visitor
        assert set(per_visitor) == {f"{name}_127.0.0.1" for name in ("first-0", "first-1", "waiting-0", "waiting-1")}
    finally:
        if arrivals is not None:
            await arrivals.stop()
        for client in hub_clients:
            await client.close()
        await b.close()
        await a.close()
        for client in clients:
            await client.aclose()
