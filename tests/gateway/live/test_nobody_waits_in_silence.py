"""Nobody waits in silence: a client whose hub connection stays open keeps its place through a store
outage, and a client whose place is gone hears why.

Real redis-server of the test's own (frozen with SIGSTOP, so connections stay open and nothing answers,
as with a hung host), two gateways on it (two backplane servers), real WebSocket hub clients.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from gateway.live.hub import HubTuning
from gateway.model.departures import Departure, departure_message
from gateway.queue.events import SessionFailed
from gateway.redis.client import COMMAND_TIMEOUT_SECONDS, open_redis
from signalr import HubOptions
from tests.harness.redis_process import RedisProcess
from tests.harness.session_hub import TIMEOUT, HubClient
from tests.harness.stack import Stack, base_config, conversation_id_of, start_hub_stack

pytestmark = [pytest.mark.redis, pytest.mark.slow]

GRACE = 3
TUNING = HubTuning(position_interval=0.2, poll_interval=0.2, reap_interval=0.2, heartbeat_interval=1.0,
                   hub_options=HubOptions(keep_alive_interval=0.5))


async def _two_gateways(url: str) -> tuple[Stack, Stack, list[aioredis.Redis]]:
    config = base_config(Queue={"RegisterTimeoutSeconds": GRACE, "DisconnectGraceSeconds": GRACE})
    config["RedisConnectionString"] = url
    # The production client (command timeout and all): a frozen Redis must look to the gateway as it would.
    clients = [open_redis(url), open_redis(url)]
    a = await start_hub_stack(clients[0], hub_tuning=TUNING, config=config)
    # B's reaper rarely runs, so A leads and judges B's clients: B's own catch-up after the outage then
    # comes up to a heartbeat retry (1 s) after A's first round, which must not blame B's clients for it.
    b = await start_hub_stack(clients[1], hub_tuning=replace(TUNING, reap_interval=30.0), config=config,
                              sim=a.sim, sim_url=a.sim_url)
    return a, b, clients


class Rounds:
    """Counts the abandonment rounds that reached the store, on every gateway given."""

    def __init__(self, *stacks: Stack) -> None:
        self.completed: asyncio.Queue[None] = asyncio.Queue()
        for stack in stacks:
            reaper = stack.gateway.session_hub.reaper
            original = reaper.run_once

            async def counted(original=original):  # type: ignore[no-untyped-def]
                result = await original()
                self.completed.put_nowait(None)
                return result

            reaper.run_once = counted  # type: ignore[method-assign]

    def drain(self) -> None:
        while not self.completed.empty():
            self.completed.get_nowait()

    async def wait(self, count: int) -> None:
        for _ in range(count):
            await asyncio.wait_for(self.completed.get(), TIMEOUT)


async def test_connected_clients_keep_their_places_through_a_stall_longer_than_the_grace(
        redis_proc: RedisProcess) -> None:
    a, b, redis_clients = await _two_gateways(redis_proc.url)
    hub_clients: list[HubClient] = []
    try:
        for _ in range(2):
            assert (await a.request_session()).code == 200
        queued = []
        for _ in range(4):
            response = await a.request_session()
            assert response.code == 202
            queued.append(json.loads(response.body)["uniqueRequestId"])
        # Two clients on each gateway.
        for i, rid in enumerate(queued):
            client = await HubClient.connect((a if i % 2 == 0 else b).base_url)
            hub_clients.append(client)
            await client.register(rid)
        rounds = Rounds(a, b)

        # Frozen for twice the grace (and past the command timeout, so calls fail as well as hang).
        stall = max(2 * GRACE, COMMAND_TIMEOUT_SECONDS + 1)
        redis_proc.pause()
        await asyncio.sleep(stall)  # the outage itself is the thing under test: it must last this long
        redis_proc.resume()
        rounds.drain()
        # Enough rounds after the store answers again for a wrong verdict to have been acted on.
        await rounds.wait(12)
        for rid in queued:
            assert (await a.gateway.service.status(rid)).status == "queued", rid
        for client in hub_clients:
            assert client.received("SessionFailed") == []

        # The reaper still works: a client that really goes is removed after the grace.
        gone = hub_clients[1]
        gone.kill()
        failed = a.outcome(queued[1])
        event = await asyncio.wait_for(failed, 4 * GRACE + 2 * stall)
        assert event == SessionFailed(request_id=queued[1], message=departure_message(
            Departure.DISCONNECTED, register_timeout=GRACE, disconnect_grace=GRACE))
        for rid in (queued[0], queued[2], queued[3]):
            assert (await a.gateway.service.status(rid)).status == "queued", rid
    finally:
        for client in hub_clients:
            await client.close()
        await b.close()
        await a.close()
        for client in redis_clients:
            await client.aclose()


async def test_a_client_whose_place_is_given_up_elsewhere_hears_why(redis_url: str) -> None:
    client_redis = aioredis.Redis.from_url(redis_url)
    stack = await start_hub_stack(client_redis, hub_tuning=TUNING)
    hub_clients: list[HubClient] = []
    try:
        conversations = []
        for _ in range(2):
            response = await stack.request_session()
            conversations.append(conversation_id_of(json.loads(response.body)["webSocketUrl"]))
        response = await stack.request_session()
        rid = json.loads(response.body)["uniqueRequestId"]
        # Two windows of one visitor wait for the same request; the place is given up over HTTP (a
        # closing third tab's beacon, say): both open windows hear why, and so does a status poll.
        for _ in range(2):
            client = await HubClient.connect(stack.base_url)
            hub_clients.append(client)
            await client.register(rid)
        assert (await stack.call("POST", f"/api/session/leave/{rid}")).code == 204
        message = departure_message(Departure.LEFT, register_timeout=60, disconnect_grace=45)
        for client in hub_clients:
            assert await client.next_event("SessionFailed") == ("SessionFailed", {"message": message})
        polled = json.loads((await stack.call("GET", f"/api/session/status/{rid}")).body)
        assert polled == {"status": "failed", "queuePosition": None, "message": message}
    finally:
        for client in hub_clients:
            await client.close()
        await stack.close()
        await client_redis.aclose()


async def test_a_store_reset_is_noticed_and_every_client_whose_request_is_gone_hears_it(
        redis_proc: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
    a, b, redis_clients = await _two_gateways(redis_proc.url)
    hub_clients: list[HubClient] = []
    try:
        for _ in range(2):
            assert (await a.request_session()).code == 200
        queued = []
        for _ in range(2):
            response = await a.request_session()
            assert response.code == 202
            queued.append(json.loads(response.body)["uniqueRequestId"])
        for i, rid in enumerate(queued):  # one client on each gateway
            client = await HubClient.connect((a, b)[i].base_url)
            hub_clients.append(client)
            await client.register(rid)
        # Both processes know the epoch before the reset.
        for stack in (a, b):
            await stack.gateway.epoch.check_once()

        redis_proc.stop()
        redis_proc.start()  # empty: no persistence
        loop = asyncio.get_running_loop()
        restarted = loop.time()
        message = departure_message(Departure.STORE_RESET, register_timeout=GRACE, disconnect_grace=GRACE)
        for client in hub_clients:
            assert await client.next_event("SessionFailed", timeout=5.0) == ("SessionFailed", {"message": message})
        assert loop.time() - restarted < 5.0
        # The status endpoint says the same; one ERROR per process; and the gateway carries on.
        polled = json.loads((await a.call("GET", f"/api/session/status/{queued[0]}")).body)
        assert polled == {"status": "failed", "queuePosition": None, "message": message}
        resets = [r for r in caplog.records if r.name == "gateway.admission.epoch" and r.levelname == "ERROR"]
        assert len(resets) == 2, [r.getMessage() for r in resets]
        assert (await b.request_session()).code in (200, 202)
    finally:
        for client in hub_clients:
            await client.close()
        await b.close()
        await a.close()
        for client in redis_clients:
            await client.aclose()


async def test_after_a_store_reset_the_platforms_usage_keeps_admission_within_its_limit(
        redis_proc: RedisProcess) -> None:
    # No configured cap: the cap is the platform's billing limit (2) minus the usage that is not ours.
    # A reset makes the store forget our two running sessions; counted as free, they would be admitted
    # again on top of themselves. The sync interval is an hour, so only the reset handling can prevent it.
    config = base_config(cap=None, Queue={"RegisterTimeoutSeconds": 60, "DisconnectGraceSeconds": 45})
    config["Concurrency"]["SyncIntervalSeconds"] = 3600
    client = open_redis(redis_proc.url)
    stack = await start_hub_stack(client, hub_tuning=TUNING, config=config, concurrency_limit=2)
    try:
        await stack.gateway.capacity_sync.sync_once()
        for _ in range(2):
            assert (await stack.request_session()).code == 200
        assert stack.sim.stats()["live"] == 2

        redis_proc.stop()
        redis_proc.start()  # empty
        codes = []
        for _ in range(2):
            response = await stack.request_session()
            for _attempt in range(5):  # the first use of a connection from before the restart may fail
                if response.code != 503:
                    break
                response = await stack.request_session()
            codes.append(response.code)
        assert codes == [202, 202]
        # Queued by the gateway itself: the platform was never asked beyond its limit.
        assert stack.sim.stats()["refused"] == 0
        assert stack.sim.stats()["live"] == 2
    finally:
        await stack.close()
        await client.aclose()
