"""The SignalR backplane on a Redis Cluster: sharded pub/sub on the node that owns the gateway's slot.

The lifetime managers' specification suite (:mod:`tests.signalr.hubs.test_lifetime_managers`) runs here again,
unchanged, with its ``cluster`` fixture replaced: two sharded managers whose clients find the owner of the
hash tag's slot, as the gateway builds them. Then the owner changes under a subscribed backplane, gracefully
(``CLUSTER FAILOVER``: the old primary stays up) and by a kill, and messages flow again on the new owner.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from gateway.admission.keys import KeySpace
from gateway.redis.cluster import backplane_factory, slot_of
from signalr.redis.lifetime import RedisHubLifetimeManager
from tests.harness.cluster import ClusterDeployment
from tests.signalr.hubs import test_lifetime_managers as spec
from tests.signalr.hubs.test_lifetime_managers import TIMEOUT, Cluster, barrier

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SPACE = KeySpace.for_store(cluster=True)
TAG = SPACE.hash_tag or ""
SLOT = slot_of(TAG)

# Every test of the specification that runs on the ``cluster`` fixture, collected here as well.
for _name, _test in vars(spec).items():
    if _name.startswith("test_") and "cluster" in inspect.signature(_test).parameters:
        globals()[_name] = _test


@pytest.fixture(scope="module")
def deployment() -> Iterator[ClusterDeployment]:
    with ClusterDeployment.running() as started:
        yield started


def _managers(deployment: ClusterDeployment, prefix: str) -> tuple[RedisHubLifetimeManager, RedisHubLifetimeManager]:
    factory = backplane_factory(deployment.url, hash_tag=TAG, timeout=TIMEOUT)
    return tuple(RedisHubLifetimeManager(deployment.url, prefix=prefix, server_id=server, ack_timeout=TIMEOUT,
                                         redis_factory=factory, sharded=True, reconnect_max_delay=0.2)
                 for server in ("A", "B"))  # type: ignore[return-value]


@pytest.fixture
async def cluster(deployment: ClusterDeployment) -> AsyncIterator[Cluster]:
    a, b = _managers(deployment, f"{SPACE.backplane}-{uuid.uuid4().hex[:8]}")
    await a.start()
    await b.start()
    assert a.online and b.online
    yield Cluster(a=a, b=b, servers=2)
    await a.close()
    await b.close()


def _shard_channels(port: int) -> set[bytes]:
    with redis.Redis(port=port) as client:
        return set(client.execute_command("PUBSUB", "SHARDCHANNELS"))


@pytest.mark.parametrize("how", ["graceful", "kill"])
async def test_the_backplane_follows_the_slot_to_its_new_owner(how: str) -> None:
    deployment = ClusterDeployment()
    try:
        deployment.start()
        a, b = _managers(deployment, SPACE.backplane)
        await a.start()
        await b.start()
        try:
            servers = Cluster(a=a, b=b, servers=2)
            on_a, on_b = await servers.connect("a"), await servers.connect("b")
            await b.send_all("before", [1])
            await on_a.expect("before", 1)
            await on_b.expect("before", 1)
            old = deployment.owner_port(SLOT)
            assert f"{SPACE.backplane}:hub:all".encode() in _shard_channels(old)
            if how == "graceful":
                _, new = await asyncio.to_thread(deployment.fail_over_gracefully, SLOT)
            else:
                deployment.kill_owner(SLOT)
                new = await asyncio.to_thread(deployment.wait_for_new_owner, SLOT, old)
            # Both listeners come back on the new owner (they may have stayed online on a graceful switch: a
            # demoted primary keeps serving its shard's subscribers as a replica, and then they move at the next
            # reconnect; a send that reaches both is what counts).
            await a.wait_online(TIMEOUT)
            await b.wait_online(TIMEOUT)

            async def delivered() -> bool:
                await b.send_connection(on_a.connection_id, "after", [2])
                try:
                    await on_a.expect("after", 2)
                    return True
                except TimeoutError:
                    return False

            # Pub/sub is at-most-once: a send racing the listener's move may be lost; the next one must arrive.
            assert await delivered() or await delivered()
            await barrier(a, on_b)
            if how == "kill":
                assert f"{SPACE.backplane}:hub:all".encode() in _shard_channels(new)
        finally:
            await a.close()
            await b.close()
    finally:
        deployment.close()
