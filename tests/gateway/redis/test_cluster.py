"""The gateway on a Redis Cluster, with real processes: three primaries with one replica each.

The gateway asks the seed nodes which primary owns its hash tag's slot and serves through it; every name it
uses lies in that slot. It follows a failover of that primary: the primary is killed (SIGKILL) while clients
wait on the hub (on two gateways, whose backplane is sharded pub/sub on the same slot) and requests keep
arriving. Requests meanwhile get 503 with ``Retry-After`` and succeed after the switch; the waiting clients
keep their hub connections and get their ``SessionReady``; no request gets two platform sessions.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
from redis.crc import key_slot

from gateway.admission.keys import (
    CLUSTER_PREFIX,
    DEFAULT_PREFIX,
    AdmissionKeys,
    KeySpace,
)
from gateway.config import parse_redis_connection_string
from gateway.live.presence import PresenceKeys
from gateway.queue.events import SessionReady
from gateway.queue.protection import BINDING_INFIX
from gateway.redis.client import check_redis_version, open_redis, run_script
from gateway.redis.cluster import ClusterPool, slot_of
from ratelimit.limiter import RateLimiter
from ratelimit.rules import Policy, Rule
from signalr.redis.protocol import BackplaneChannels
from tests.gateway.redis.test_sentinel import Arrivals, _poll, _ready
from tests.harness.cluster import ClusterDeployment
from tests.harness.redis_process import RedisProcess
from tests.harness.session_hub import FAST, TIMEOUT, HubClient
from tests.harness.stack import (
    Stack,
    base_config,
    conversation_id_of,
    session_body,
    start_hub_stack,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TAG = KeySpace.for_store(cluster=True).hash_tag
SLOT = slot_of(TAG or "")


@pytest.fixture(scope="module")
def deployment() -> Iterator[ClusterDeployment]:
    """One cluster for the tests that leave it whole; the failover tests make their own."""
    with ClusterDeployment.running() as started:
        yield started


@pytest.fixture
def own_deployment() -> Iterator[ClusterDeployment]:
    started = ClusterDeployment()
    try:
        started.start()
        yield started
    finally:
        started.close()


def _names(keys: object) -> list[str]:
    """Every name-valued property of a key-name object."""
    names = []
    for attribute in dir(type(keys)):
        if isinstance(getattr(type(keys), attribute), property):
            value = getattr(keys, attribute)
            if isinstance(value, str):
                names.append(value)
    return names


def test_every_name_of_a_cluster_deployment_lies_in_one_slot() -> None:
    space = KeySpace.for_store(cluster=True)
    assert space.prefix == CLUSTER_PREFIX and space.hash_tag == "iqra"
    admission = space.admission
    limiter = RateLimiter(fakeredis.FakeAsyncRedis(), key_prefix=space.rate_limits)  # only its key names
    channels = BackplaneChannels(prefix=space.backplane, hub="sessionHub")
    names = [
        *admission.shared(), *_names(admission), admission.outcome("r-1"), admission.tombstone("r-1"),
        admission.claim_fence("t"), *_names(PresenceKeys(prefix=space.presence)), space.admin_audit,
        limiter.key_for(Rule(policy=Policy.HOURLY, subject="c:{other}", limit=1)),
        limiter.key_for(Rule(policy=Policy.CONCURRENT, subject="ip:10.0.0.1", limit=1)),
        space.rate_limits + BINDING_INFIX + "conversation",
        channels.all, channels.internal_groups, channels.ack("server"), channels.group("g"), channels.connection("c"),
        channels.groups, channels.connections,
    ]
    assert len(names) > 25
    assert {name: key_slot(name.encode()) for name in names} == {name: SLOT for name in names}


def test_elsewhere_the_names_stay_as_they_were() -> None:
    """Renaming the keys of a running deployment would orphan its state: only a cluster gets the tag."""
    space = KeySpace.for_store(cluster=False)
    assert space == KeySpace() and space.prefix == DEFAULT_PREFIX and space.hash_tag is None
    assert AdmissionKeys().queue == "iqra:admission:queue"


async def test_the_store_client_reaches_the_owner_of_the_slot(deployment: ClusterDeployment) -> None:
    owner = deployment.owner_port(SLOT)
    # Seeds that do not own the slot, one of them a replica: the client is sent on to the owner.
    seeds = [node.port for node in deployment.nodes if node.port != owner][-2:]
    client = open_redis("redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in seeds), hash_tag=TAG)
    try:
        assert isinstance(client.connection_pool, ClusterPool)
        await check_redis_version(client)  # serve's start-up check, on the owner
        assert client.connection_pool.gate.verified
        assert (await client.info("server"))["tcp_port"] == owner
        script = client.register_script("return redis.call('INCR', KEYS[1])")
        assert await run_script(client, script, [CLUSTER_PREFIX + "counter"], []) == 1
    finally:
        await client.aclose()


async def test_a_cluster_url_needs_the_hash_tag() -> None:
    with pytest.raises(ValueError, match="hash tag"):
        open_redis("redis+cluster://127.0.0.1:1")


async def test_with_no_node_answering_the_gateway_starts_without_the_store(caplog: pytest.LogCaptureFixture) -> None:
    nobody = RedisProcess()  # a port nobody listens on
    client = open_redis(f"redis+cluster://127.0.0.1:{nobody.port}", hash_tag=TAG)
    try:
        await check_redis_version(client)
        assert not client.connection_pool.gate.verified
        assert any("starting without the store" in r.getMessage() and "no node of the Redis Cluster named" in r.getMessage()
                   for r in caplog.records)
    finally:
        await client.aclose()
        nobody.close()


async def test_a_manual_failover_moves_the_connections_to_the_new_owner(
        own_deployment: ClusterDeployment, caplog: pytest.LogCaptureFixture) -> None:
    """``CLUSTER FAILOVER`` keeps the old primary up, as a replica: an open connection to it gets ``MOVED``,
    which closes it as a connection error (503); the next connect finds the new owner."""
    deployment = own_deployment
    client = open_redis(deployment.url, hash_tag=TAG)
    try:
        script = client.register_script("return redis.call('INCR', KEYS[1])")
        key = CLUSTER_PREFIX + "counter"
        assert await run_script(client, script, [key], []) == 1
        old = deployment.owner_port(SLOT)
        await asyncio.to_thread(deployment.wait_replicated, SLOT)
        with redis.Redis(port=old) as primary:
            replica_port = next(int(r["port"]) for r in [primary.info("replication")["slave0"]])
        assert await asyncio.to_thread(deployment.fail_over_gracefully, SLOT) == (old, replica_port)
        new = replica_port

        with pytest.raises(redis.ConnectionError, match="does not serve the gateway's slot now"):
            await run_script(client, script, [key], [])  # the pooled connection, on the demoted primary
        assert await run_script(client, script, [key], []) == 2  # reconnected to the new owner, script reloaded
        assert (await client.info("server"))["tcp_port"] == new
        moved = [r.getMessage() for r in caplog.records if "moved from" in r.getMessage()]
        assert moved == [(f"the primary owning the gateway's slot {SLOT} of the cluster via "
                         f"{deployment.url.split('//')[1]} moved from 127.0.0.1:{old} to 127.0.0.1:{new} "
                         "(a failover or a migration); connections follow it")]
    finally:
        await client.aclose()


async def _two_gateways(connection_string: str, *, wait: bool) -> tuple[Stack, Stack, list[Any]]:
    config = base_config(Queue={"RegisterTimeoutSeconds": 60, "DisconnectGraceSeconds": 45},
                         # Rate limits too, so that their keys (and the sessions' unit bindings) are written.
                         Security={"RateLimitHourly": 100, "RateLimitConcurrency": 5,
                                   "PerIpRateLimitHourly": 10_000, "PerIpRateLimitConcurrency": 1_000})
    if wait:  # WAIT on the slot's primary counts its replicas; after the failover it has none left
        config["Redis"] = {"WaitForReplicas": 1}
    config["RedisConnectionString"] = connection_string  # the backplane finds the slot's owner too
    url = parse_redis_connection_string(connection_string)
    clients = [open_redis(url, hash_tag=TAG), open_redis(url, hash_tag=TAG)]
    a = await start_hub_stack(clients[0], hub_tuning=FAST, config=config)
    b = await start_hub_stack(clients[1], hub_tuning=FAST, config=config, sim=a.sim, sim_url=a.sim_url)
    return a, b, clients


def _channels(deployment: ClusterDeployment) -> dict[str, set[bytes]]:
    """The backplane's channels of every live node: sharded ones only on the owner, no plain ones anywhere."""
    found: dict[str, set[bytes]] = {"sharded on the owner": set(), "sharded elsewhere": set(), "plain": set()}
    owner = deployment.owner_port(SLOT)
    for node in deployment.nodes:
        if node.pid is None:
            continue
        with redis.Redis(port=node.port) as client:
            sharded = set(client.execute_command("PUBSUB", "SHARDCHANNELS"))
            found["sharded on the owner" if node.port == owner else "sharded elsewhere"] |= sharded
            found["plain"] |= set(client.execute_command("PUBSUB", "CHANNELS"))
    return found


def _keys_outside_the_slot(deployment: ClusterDeployment) -> dict[int, int]:
    """Per live primary, how many of its keys lie outside the gateway's slot (nothing else writes here)."""
    outside = {}
    for node in deployment.nodes:
        if node.pid is None:
            continue
        with redis.Redis(port=node.port) as client:
            if client.info("replication")["role"] != "master":
                continue
            in_slot = client.execute_command("CLUSTER", "COUNTKEYSINSLOT", SLOT)
            outside[node.port] = client.dbsize() - in_slot
    return outside


@pytest.mark.parametrize("wait", [False, True], ids=["no-wait", "wait-for-replicas"])
async def test_a_failover_answers_503_meanwhile_and_keeps_every_waiting_client(
        own_deployment: ClusterDeployment, wait: bool) -> None:
    deployment = own_deployment
    a, b, clients = await _two_gateways(deployment.stackexchange, wait=wait)
    hub_clients: list[HubClient] = []
    arrivals: Arrivals | None = None
    try:
        # The cap (2) is taken; four visitors wait, on B and A in turn: B serves no dispatch, so the
        # SessionReady of B's clients crosses the (sharded) backplane from A.
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
        # The state is all in the gateway's slot, on its owner; so are the backplane's channels (sharded).
        assert set(_keys_outside_the_slot(deployment).values()) == {0}
        with redis.Redis(port=deployment.owner_port(SLOT)) as owner:
            assert owner.keys("{iqra}:rl:*") and owner.keys("{iqra}:presence:*")
        channels = _channels(deployment)
        assert b"{iqra}:signalr:sessionHub:all" in channels["sharded on the owner"], channels
        assert not channels["sharded elsewhere"] and not channels["plain"], channels
        # Everything so far is on the replica: what a failover can lose is the Sentinel tests' subject.
        await asyncio.to_thread(deployment.wait_replicated, SLOT)

        arrivals = Arrivals(a, b)
        await _poll(lambda: arrivals.succeeded_since(0) >= 2, "requests before the failover")
        old_port = deployment.kill_owner(SLOT)
        killed_at = time.monotonic()
        await asyncio.to_thread(deployment.wait_for_new_owner, SLOT, old_port)
        for stack in (a, b):
            await _poll(lambda stack=stack: _ready(stack), "the gateway ready on the new owner")
        switched_at = time.monotonic()
        await _poll(lambda: arrivals.succeeded_since(switched_at) >= 4, "requests served after the failover")
        await arrivals.stop()

        during = [r for r in arrivals.responses if killed_at < r[0] <= switched_at]
        assert any(code == 503 for _, code, _, _ in during), "no request met the switch"
        for _, code, retry_after, body in arrivals.responses:
            assert code in (200, 202, 503), (code, body)
            if code == 503:
                assert retry_after is not None and int(retry_after) > 0 and body["message"]
        assert all(code == 202 for at, code, _, _ in arrivals.responses if at > switched_at)

        # The backplane came back on the new owner for both gateways; nobody was disconnected.
        for stack in (a, b):
            await stack.gateway.session_hub.lifetime.wait_online(TIMEOUT)
        assert b"{iqra}:signalr:sessionHub:all" in _channels(deployment)["sharded on the owner"]
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
        assert set(_keys_outside_the_slot(deployment).values()) == {0}
    finally:
        if arrivals is not None:
            await arrivals.stop()
        for client in hub_clients:
            await client.close()
        await b.close()
        await a.close()
        for client in clients:
            await client.aclose()
