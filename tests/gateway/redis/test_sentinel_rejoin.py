"""After a Sentinel failover the old primary comes back, and the gateway must not follow it.

A primary killed without persistence restarts empty and, until the sentinels see it and turn it into a
replica of the new primary, calls itself a primary. A gateway that reconnected to it in that window would
see no sessions and no queue, and admit past the cap. The gateway only ever connects where the sentinels
point, so it keeps serving from the new primary: the cap holds, the waiting visitors keep their places and
are served in turn, and the old node ends up a replica holding the same state.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import redis

from gateway.config import parse_redis_connection_string
from gateway.queue.events import SessionReady
from gateway.redis.client import open_redis
from tests.harness.sentinel import SentinelDeployment
from tests.harness.session_hub import FAST, TIMEOUT, HubClient
from tests.harness.stack import (
    base_config,
    conversation_id_of,
    session_body,
    start_hub_stack,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def deployment() -> Iterator[SentinelDeployment]:
    with SentinelDeployment.running() as started:
        yield started


def _replication(port: int) -> dict:  # type: ignore[type-arg]
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0) as client:
        return client.info("replication")


async def _until(condition, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        await asyncio.sleep(0.05)


async def test_the_old_primary_back_empty_is_never_written_and_the_queue_keeps_its_order(
        deployment: SentinelDeployment) -> None:
    config = base_config(Queue={"RegisterTimeoutSeconds": 60, "DisconnectGraceSeconds": 45})
    config["RedisConnectionString"] = deployment.url
    client = open_redis(parse_redis_connection_string(deployment.url))
    stack = await start_hub_stack(client, hub_tuning=FAST, config=config)
    hub_clients: list[HubClient] = []
    try:
        conversations = []
        for i in range(2):  # the cap (2) is taken
            response = await stack.request_session(session_body(clientIdentifier=f"first-{i}"))
            assert response.code == 200, response.body
            conversations.append(conversation_id_of(json.loads(response.body)["webSocketUrl"]))
        waiting = []
        for i in range(2):
            response = await stack.request_session(session_body(clientIdentifier=f"waiting-{i}"))
            assert response.code == 202, response.body
            waiting.append(json.loads(response.body)["uniqueRequestId"])
            hub = await HubClient.connect(stack.base_url)
            hub_clients.append(hub)
            await hub.register(waiting[-1])
        await asyncio.to_thread(deployment.wait_replicated)

        old_port = deployment.kill_primary()
        new_port = await asyncio.to_thread(deployment.wait_for_new_primary, old_port)

        async def ready() -> bool:
            return (await stack.call("GET", "/readyz")).code == 200

        await _until(ready, "the gateway ready on the new primary")

        deployment.primary.start()  # back, empty, and still a primary in its own eyes
        assert _replication(old_port)["role"] == "master"
        # Every connection of the gateway is dropped while the old node calls itself a primary, so the
        # next ones are made now: the sentinels must be what they follow, not an old address.
        await client.connection_pool.disconnect()
        response = await stack.request_session(session_body(clientIdentifier="during-the-rejoin"))
        assert response.code == 202, response.body  # the cap still holds: the slots are on the new primary
        assert json.loads(response.body)["queuePosition"] == 3

        async def demoted() -> bool:
            info = _replication(old_port)
            return (info["role"] == "slave" and int(info["master_port"]) == new_port
                    and info.get("master_link_status") == "up")

        await _until(demoted, "the old primary turned into a replica of the new one", timeout=60)
        with redis.Redis(port=old_port) as old, redis.Redis(port=new_port) as new:
            assert new.execute_command("WAIT", 1, 5000) == 1
            assert old.dbsize() == new.dbsize()  # the same state, nothing of its own

        # The visitors are served in their order from the state that survived.
        assert (await stack.end(conversations[0])).code == 200
        _, ready_message = await hub_clients[0].next_event("SessionReady", timeout=TIMEOUT)
        assert ready_message["webSocketUrl"]
        assert isinstance(await asyncio.wait_for(stack.outcome(waiting[0]), TIMEOUT), SessionReady)
        await hub_clients[1].position(1)
        assert hub_clients[1].received("SessionReady") == []
        assert sorted(call.client_identifier for call in stack.sim.calls.values()) == [
            "first-0_127.0.0.1", "first-1_127.0.0.1", "waiting-0_127.0.0.1"]
    finally:
        for hub in hub_clients:
            await hub.close()
        await stack.close()
        await client.aclose()
