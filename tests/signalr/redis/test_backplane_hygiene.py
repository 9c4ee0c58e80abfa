"""Backplane hygiene: group names a backplane cannot name a channel after are refused before any state
changes, and the Redis URL is never logged with its password."""

from __future__ import annotations

import pytest
import redis.asyncio

from signalr.hubs.clients import GroupManager
from signalr.hubs.lifetime import InMemoryHubLifetimeManager, SerializedMessage
from signalr.redis.lifetime import RedisHubLifetimeManager


class Sink:
    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self.received: list[SerializedMessage] = []

    def send_serialized(self, message: SerializedMessage) -> None:
        self.received.append(message)


@pytest.mark.parametrize("bad", ["g\ud800", "", None])
async def test_in_memory_manager_refuses_unusable_group_names(bad: object) -> None:
    manager = InMemoryHubLifetimeManager()
    await manager.on_connected(Sink("c1"))
    groups = GroupManager(manager)
    with pytest.raises(ValueError):
        await groups.add("c1", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await groups.remove("c1", bad)  # type: ignore[arg-type]


@pytest.mark.redis
async def test_redis_backplane_keeps_no_subscription_after_a_refused_group_name(redis_url: str) -> None:
    # Before the check, the local join happened, the SUBSCRIBE failed to encode, and the disconnect's
    # UNSUBSCRIBE failed the same way: the connection's own channel stayed subscribed for good.
    observer = redis.asyncio.Redis.from_url(redis_url)
    manager = RedisHubLifetimeManager(redis_url, prefix="test:signalr", hub_name="groups")
    await manager.start()
    try:
        before = sorted(await observer.pubsub_channels())
        sink = Sink("c1")
        await manager.on_connected(sink)
        with pytest.raises(ValueError):
            await GroupManager(manager).add("c1", "g\ud800")
        await GroupManager(manager).add("c1", "fine")
        await manager.on_disconnected(sink)
        assert sorted(await observer.pubsub_channels()) == before
    finally:
        await manager.close()
        await observer.aclose()


async def test_an_unreachable_backplane_is_logged_without_its_password(caplog: pytest.LogCaptureFixture) -> None:
    from tests.harness.redis_process import free_port

    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    manager = RedisHubLifetimeManager(url, prefix="test:signalr", hub_name="pw", ack_timeout=0.2)
    await manager.start()
    try:
        logged = " ".join(record.getMessage() for record in caplog.records)
        assert "not reachable" in logged
        assert "s3cret-pw" not in logged
    finally:
        await manager.close()
