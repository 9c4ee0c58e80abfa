"""One specification suite for every hub lifetime manager.

Each ``cluster`` test runs against the in-memory manager (both "servers" are the same instance) and
against the Redis backplane (two ``RedisHubLifetimeManager`` instances on one real redis-server), in each
of its two channel layouts.

Absence of a message is never checked by waiting: after the send under test, a *barrier* message is
sent to the same connection through a path ordered after it (Redis delivers one subscriber's messages
in publish order), so the barrier arriving first proves the other message was not delivered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio

from signalr.hubs.lifetime import (
    GroupActionError,
    HubLifetimeManager,
    InMemoryHubLifetimeManager,
    SerializedMessage,
)
from signalr.protocol import HubMessage, HubProtocol, InvocationMessage, get_protocol
from signalr.redis.lifetime import RedisHubLifetimeManager, reconnect_delay
from signalr.redis.protocol import BackplaneLayout
from tests.harness.redis_process import RedisProcess, free_port

TIMEOUT = 5.0
_ids = itertools.count(1)


class CountingProtocol:
    """A real hub protocol that counts how often it encodes."""

    def __init__(self, name: str) -> None:
        inner = get_protocol(name)
        assert inner is not None
        self.inner: HubProtocol = inner
        self.name = inner.name
        self.writes = 0

    def write_message(self, message: HubMessage) -> bytes:
        self.writes += 1
        return self.inner.write_message(message)


class Client:
    """A HubConnectionSink that decodes what it is sent with its own protocol."""

    def __init__(self, protocol: CountingProtocol, connection_id: str | None = None) -> None:
        self.connection_id = connection_id or f"conn-{next(_ids)}"
        self.protocol = protocol
        self.inbox: asyncio.Queue[InvocationMessage] = asyncio.Queue()

    def send_serialized(self, message: SerializedMessage) -> None:
        messages, rest = self.protocol.inner.parse_messages(message.bytes_for(self.protocol))  # type: ignore[arg-type]
        assert rest == b""
        for decoded in messages:
            self.inbox.put_nowait(decoded)

    async def receive(self) -> InvocationMessage:
        return await asyncio.wait_for(self.inbox.get(), TIMEOUT)

    async def expect(self, target: str, *arguments: Any) -> None:
        message = await self.receive()
        assert (message.target, message.arguments) == (target, arguments)

    async def expect_unordered(self, *expected: tuple[Any, ...]) -> None:
        """Receive ``len(expected)`` messages, ``(target, *arguments)`` each, in any order.

        Messages sent by different servers have no relative order: a local send lands at once while
        the other server's goes through Redis.
        """
        received = [await self.receive() for _ in expected]
        assert sorted((m.target, *m.arguments) for m in received) == sorted(expected)


class BrokenClient(Client):
    def send_serialized(self, message: SerializedMessage) -> None:
        raise RuntimeError("socket is gone")


@dataclass
class Cluster:
    a: HubLifetimeManager
    b: HubLifetimeManager
    servers: int  # distinct processes: 1 for in-memory, 2 for Redis

    def __post_init__(self) -> None:
        # Per "server" role, so the in-memory case (a is b) still gives each side its own instances.
        self.protocols = {role: {n: CountingProtocol(n) for n in ("json", "messagepack")} for role in "ab"}

    async def connect(self, role: str, protocol: str = "json", cls: type[Client] = Client) -> Client:
        client = cls(self.protocols[role][protocol])
        await (self.a if role == "a" else self.b).on_connected(client)
        return client


async def barrier(sender: HubLifetimeManager, *clients: Client) -> None:
    """Prove that nothing else is queued for ``clients`` from ``sender``'s earlier sends."""
    for client in clients:
        token = next(_ids)
        await sender.send_connection(client.connection_id, "barrier", [token])
        await client.expect("barrier", token)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("redis-shared", marks=pytest.mark.redis)])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    if request.param == "memory":
        manager = InMemoryHubLifetimeManager()
        await manager.start()
        yield Cluster(a=manager, b=manager, servers=1)
        await manager.close()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"spec-{uuid.uuid4().hex[:8]}"
    layout = BackplaneLayout.SHARED if request.param == "redis-shared" else BackplaneLayout.PER_TARGET
    a = RedisHubLifetimeManager(url, prefix=prefix, server_id="A", ack_timeout=TIMEOUT, layout=layout)
    b = RedisHubLifetimeManager(url, prefix=prefix, server_id="B", ack_timeout=TIMEOUT, layout=layout)
    await a.start()
    await b.start()
    assert a.online and b.online
    yield Cluster(a=a, b=b, servers=2)
    await a.close()
    await b.close()


# -- the specification ---------------------------------------------------------------------------


async def test_send_all_reaches_everyone_exactly_once(cluster: Cluster) -> None:
    a1 = await cluster.connect("a")
    a2 = await cluster.connect("a", "messagepack")
    b1 = await cluster.connect("b")
    await cluster.a.send_all("hello", [1, "x", {"k": [True, None]}])
    await cluster.b.send_all("again", ())
    for client in (a1, a2, b1):
        await client.expect_unordered(("hello", 1, "x", {"k": [True, None]}), ("again",))
    await barrier(cluster.a, a1, a2, b1)
    await barrier(cluster.b, a1, a2, b1)


async def test_send_all_exclude(cluster: Cluster) -> None:
    a1 = await cluster.connect("a")
    a2 = await cluster.connect("a")
    b1 = await cluster.connect("b")
    b2 = await cluster.connect("b")
    await cluster.a.send_all("news", [1], exclude=[a2.connection_id, b2.connection_id])
    await a1.expect("news", 1)
    await b1.expect("news", 1)
    await barrier(cluster.a, a2, b2, a1, b1)


async def test_send_connection_local_and_remote(cluster: Cluster) -> None:
    a1 = await cluster.connect("a")
    b1 = await cluster.connect("b", "messagepack")
    await cluster.a.send_connection(a1.connection_id, "local", [1])
    await cluster.a.send_connection(b1.connection_id, "remote", [2])
    await a1.expect("local", 1)
    await b1.expect("remote", 2)
    await barrier(cluster.a, a1, b1)
    await cluster.a.send_connection("nobody-has-this-id", "lost", [])  # a no-op, not an error


async def test_send_connections_mixes_local_and_remote_without_duplicates(cluster: Cluster) -> None:
    a1 = await cluster.connect("a")
    a2 = await cluster.connect("a")
    b1 = await cluster.connect("b")
    ids = [a1.connection_id, b1.connection_id, a1.connection_id, "unknown"]
    await cluster.a.send_connections(ids, "some", ["x"])
    await a1.expect("some", "x")
    await b1.expect("some", "x")
    await barrier(cluster.a, a1, b1, a2)


async def test_group_send_reaches_members_on_both_servers_only(cluster: Cluster) -> None:
    a_member = await cluster.connect("a")
    a_other = await cluster.connect("a")
    b_member = await cluster.connect("b", "messagepack")
    b_other = await cluster.connect("b")
    await cluster.a.add_to_group(a_member.connection_id, "room")
    await cluster.b.add_to_group(b_member.connection_id, "room")
    await cluster.a.send_group("room", "say", ["hi"])
    await cluster.b.send_group("room", "say", ["ho"])
    for member in (a_member, b_member):
        await member.expect_unordered(("say", "hi"), ("say", "ho"))
    await barrier(cluster.a, a_other, b_other, a_member, b_member)
    await barrier(cluster.b, a_other, b_other, a_member, b_member)


async def test_group_names_are_case_sensitive(cluster: Cluster) -> None:
    member = await cluster.connect("b")
    await cluster.b.add_to_group(member.connection_id, "Room")
    await cluster.a.send_group("room", "wrong", [])
    await cluster.a.send_group("Room", "right", [])
    await member.expect("right")


async def test_group_send_exclude(cluster: Cluster) -> None:
    a1 = await cluster.connect("a")
    b1 = await cluster.connect("b")
    b2 = await cluster.connect("b")
    for client, server in ((a1, cluster.a), (b1, cluster.b), (b2, cluster.b)):
        await server.add_to_group(client.connection_id, "g")
    await cluster.a.send_group("g", "m", [], exclude={a1.connection_id, b1.connection_id})
    await b2.expect("m")
    await barrier(cluster.a, a1, b1, b2)


async def test_send_groups_delivers_once_per_connection(cluster: Cluster) -> None:
    a_both = await cluster.connect("a")
    b_both = await cluster.connect("b")
    b_second = await cluster.connect("b")
    outsider = await cluster.connect("b")
    for client, server in ((a_both, cluster.a), (b_both, cluster.b)):
        await server.add_to_group(client.connection_id, "g1")
        await server.add_to_group(client.connection_id, "g2")
    await cluster.b.add_to_group(b_second.connection_id, "g2")
    await cluster.a.send_groups(["g1", "g2", "g1"], "multi", [7])
    for client in (a_both, b_both, b_second):
        await client.expect("multi", 7)
    await barrier(cluster.a, a_both, b_both, b_second, outsider)


async def test_remove_from_group_stops_delivery(cluster: Cluster) -> None:
    a1 = await cluster.connect("a")
    b1 = await cluster.connect("b")
    b_witness = await cluster.connect("b")
    await cluster.a.add_to_group(a1.connection_id, "g")
    await cluster.b.add_to_group(b1.connection_id, "g")
    await cluster.b.add_to_group(b_witness.connection_id, "g")
    await cluster.a.remove_from_group(a1.connection_id, "g")
    await cluster.b.remove_from_group(b1.connection_id, "g")
    await cluster.b.remove_from_group(b1.connection_id, "g")  # idempotent
    await cluster.a.send_group("g", "after-leave", [])
    await b_witness.expect("after-leave")
    await barrier(cluster.a, a1, b1)


async def test_last_member_leaving_then_rejoining(cluster: Cluster) -> None:
    b1 = await cluster.connect("b")
    await cluster.b.add_to_group(b1.connection_id, "g")
    await cluster.b.remove_from_group(b1.connection_id, "g")
    await cluster.a.send_group("g", "gone", [])
    await barrier(cluster.a, b1)
    await cluster.b.add_to_group(b1.connection_id, "g")
    await cluster.a.send_group("g", "back", [])
    await b1.expect("back")


async def test_double_add_delivers_once(cluster: Cluster) -> None:
    a1 = await cluster.connect("a")
    b1 = await cluster.connect("b")
    for _ in range(2):
        await cluster.a.add_to_group(a1.connection_id, "g")
        await cluster.b.add_to_group(b1.connection_id, "g")
    await cluster.a.send_group("g", "once", [])
    await a1.expect("once")
    await b1.expect("once")
    await barrier(cluster.a, a1, b1)


async def test_on_disconnected_leaves_groups_and_stops_delivery(cluster: Cluster) -> None:
    a1 = await cluster.connect("a")
    b_gone = await cluster.connect("b")
    b_witness = await cluster.connect("b")
    for client, server in ((a1, cluster.a), (b_gone, cluster.b), (b_witness, cluster.b)):
        await server.add_to_group(client.connection_id, "g")
    await cluster.a.on_disconnected(a1)
    await cluster.b.on_disconnected(b_gone)
    assert cluster.a.local_connection(a1.connection_id) is None
    assert cluster.b.local_connection(b_gone.connection_id) is None
    assert cluster.b.local_connection(b_witness.connection_id) is b_witness
    await cluster.a.send_group("g", "g-msg", [])
    await cluster.a.send_all("all-msg", [])
    await cluster.a.send_connection(b_gone.connection_id, "direct", [])
    await b_witness.expect("g-msg")
    await b_witness.expect("all-msg")
    await barrier(cluster.a, b_witness)
    # The witness shares the departed connection's server, so both would have been served together.
    assert a1.inbox.empty() and b_gone.inbox.empty()
    # A new connection reusing neither membership starts outside the group.
    await cluster.b.on_connected(b_gone)
    await cluster.a.send_group("g", "second", [])
    await b_witness.expect("second")
    await barrier(cluster.a, b_gone)


async def test_add_and_remove_for_a_remote_connection(cluster: Cluster) -> None:
    b1 = await cluster.connect("b", "messagepack")
    b_other = await cluster.connect("b")
    await cluster.a.add_to_group(b1.connection_id, "remote-room")
    await cluster.a.send_group("remote-room", "from-a", [1])
    await cluster.b.send_group("remote-room", "from-b", [2])
    await b1.expect_unordered(("from-a", 1), ("from-b", 2))
    await barrier(cluster.a, b_other)
    await cluster.a.remove_from_group(b1.connection_id, "remote-room")
    await cluster.a.send_group("remote-room", "after", [])
    await barrier(cluster.a, b1)


async def test_a_broken_connection_does_not_block_others(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    first = await cluster.connect("a")
    broken_a = await cluster.connect("a", cls=BrokenClient)
    broken_b = await cluster.connect("b", cls=BrokenClient)
    last_a = await cluster.connect("a")
    last_b = await cluster.connect("b")
    for client, server in ((first, cluster.a), (broken_a, cluster.a), (broken_b, cluster.b),
                           (last_a, cluster.a), (last_b, cluster.b)):
        await server.add_to_group(client.connection_id, "g")
    with caplog.at_level(logging.ERROR, logger="signalr.lifetime"):
        await cluster.a.send_all("all", [])
        await cluster.a.send_group("g", "group", [])
        await cluster.a.send_connections([broken_a.connection_id, last_a.connection_id], "some", [])
        for client in (first, last_a, last_b):
            await client.expect("all")
            await client.expect("group")
        await last_a.expect("some")
    logged = caplog.text
    assert broken_a.connection_id in logged and broken_b.connection_id in logged


async def test_serialized_once_per_protocol_per_server(cluster: Cluster) -> None:
    clients = []
    for role in "ab":
        for protocol in ("json", "messagepack", "json", "messagepack", "json"):
            clients.append(await cluster.connect(role, protocol))
    for protocols in cluster.protocols.values():
        for protocol in protocols.values():
            protocol.writes = 0
    await cluster.a.send_all("count", [1, 2, 3])
    for client in clients:
        await client.expect("count", 1, 2, 3)
    writes = {"json": 0, "messagepack": 0}
    for protocols in cluster.protocols.values():
        for name, protocol in protocols.items():
            assert protocol.writes <= 1
            writes[name] += protocol.writes
    assert writes == {"json": cluster.servers, "messagepack": cluster.servers}


async def test_concurrent_connects_and_joins_are_all_reachable(cluster: Cluster) -> None:
    async def join(role: str, group: str) -> Client:
        client = await cluster.connect(role)
        await (cluster.a if role == "a" else cluster.b).add_to_group(client.connection_id, group)
        return client

    clients = await asyncio.gather(*(join("ab"[i % 2], f"g{i % 3}") for i in range(60)))
    await cluster.a.send_groups(["g0", "g1", "g2"], "everyone", [])
    await cluster.b.send_group("g1", "g1-only", [])
    for i, client in enumerate(clients):
        if i % 3 == 1:
            await client.expect_unordered(("everyone",), ("g1-only",))
        else:
            await client.expect("everyone")
    await barrier(cluster.b, *clients)


async def test_a_single_string_is_rejected_where_a_collection_is_expected(cluster: Cluster) -> None:
    with pytest.raises(TypeError, match="^groups must be a collection of strings, not a single str$"):
        await cluster.a.send_groups("room", "m", [])
    with pytest.raises(TypeError, match="^exclude must be a collection of strings"):
        await cluster.a.send_all("m", [], exclude="conn-1")
    with pytest.raises(TypeError, match="^connection_ids must be a collection of strings"):
        await cluster.a.send_connections("conn-1", "m", [])


async def test_in_memory_add_for_an_unknown_connection_is_a_no_op() -> None:
    manager = InMemoryHubLifetimeManager()
    member = Client(CountingProtocol("json"))
    await manager.on_connected(member)
    await manager.add_to_group("ghost", "g")
    await manager.remove_from_group("ghost", "g")
    await manager.add_to_group(member.connection_id, "g")
    await manager.send_group("g", "m", [])
    await member.expect("m")
    assert manager.local_connection("ghost") is None


# -- Redis-specific behaviour --------------------------------------------------------------------


def test_reconnect_delay_doubles_up_to_the_cap() -> None:
    delays = [reconnect_delay(n, initial=0.05, cap=1.0) for n in range(8)]
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert reconnect_delay(10_000, initial=0.05, cap=30.0) == 30.0


async def _redis_pair(url: str, **options: Any) -> tuple[RedisHubLifetimeManager, RedisHubLifetimeManager]:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    a = RedisHubLifetimeManager(url, prefix=prefix, server_id="A", **options)
    b = RedisHubLifetimeManager(url, prefix=prefix, server_id="B", **options)
    await a.start()
    await b.start()
    return a, b


@pytest.mark.redis
async def test_group_change_for_an_unknown_connection_fails_clearly(redis_url: str) -> None:
    a, b = await _redis_pair(redis_url, ack_timeout=0.3)
    try:
        with pytest.raises(GroupActionError, match=r"No server acknowledged adding connection 'ghost' to group "
                                                   r"'g' within 0\.3 s"):
            await a.add_to_group("ghost", "g")
        with pytest.raises(GroupActionError, match="removing connection 'ghost' from group 'g'"):
            await a.remove_from_group("ghost", "g")
    finally:
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_subscriptions_follow_local_membership(redis_url: str) -> None:
    a, b = await _redis_pair(redis_url)
    probe = redis.asyncio.Redis.from_url(redis_url)
    try:
        channels = a.channels

        async def subscribers(channel: str) -> int:
            return dict(await probe.pubsub_numsub(channel))[channel.encode()]

        assert await subscribers(channels.all) == 2
        assert await subscribers(channels.internal_groups) == 2
        assert await subscribers(channels.ack("A")) == 1
        client = Client(CountingProtocol("json"))
        await b.on_connected(client)
        assert await subscribers(channels.connection(client.connection_id)) == 1
        await b.add_to_group(client.connection_id, "g")
        assert await subscribers(channels.group("g")) == 1
        await b.remove_from_group(client.connection_id, "g")
        assert await subscribers(channels.group("g")) == 0
        await a.add_to_group(client.connection_id, "g2")  # remote: b subscribes before acking
        assert await subscribers(channels.group("g2")) == 1
        await b.on_disconnected(client)
        assert await subscribers(channels.connection(client.connection_id)) == 0
        assert await subscribers(channels.group("g2")) == 0
    finally:
        await probe.aclose()
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_the_shared_layout_subscribes_once_and_never_per_connection_or_group(redis_url: str) -> None:
    a, b = await _redis_pair(redis_url, layout=BackplaneLayout.SHARED)
    probe = redis.asyncio.Redis.from_url(redis_url)
    try:
        channels = a.channels
        base = channels.base.encode()

        async def backplane_channels() -> dict[bytes, int]:
            names = await probe.pubsub_channels(channels.base + ":*")
            return dict(await probe.pubsub_numsub(*names)) if names else {}

        fixed = {channels.all: 2, channels.internal_groups: 2, channels.groups: 2, channels.connections: 2,
                 channels.ack("A"): 1, channels.ack("B"): 1}
        expected = {name.encode(): count for name, count in fixed.items()}
        assert await backplane_channels() == expected
        clients = [Client(CountingProtocol("json")) for _ in range(3)]
        for client in clients:
            await b.on_connected(client)
            await b.add_to_group(client.connection_id, f"g-{client.connection_id}")
        await a.add_to_group(clients[0].connection_id, "remote")  # applied by b, acked
        await a.send_group("remote", "joined-remotely", [1])
        await clients[0].expect("joined-remotely", 1)
        # Not one subscription more on Redis for three connections in four groups.
        assert await backplane_channels() == expected
        # A send to several groups (or connections) elsewhere is one message, and each connection gets it once.
        listener = probe.pubsub()
        await listener.subscribe(channels.groups, channels.connections)
        await a.send_groups(["remote", f"g-{clients[0].connection_id}", f"g-{clients[1].connection_id}"], "many", [])
        await a.send_connections([c.connection_id for c in clients[1:]], "direct", [])
        for client in clients[:2]:
            await client.expect("many")
        for client in clients[1:]:
            await client.expect("direct")
        await barrier(a, *clients)
        published = []
        while len(published) < 2 + len(clients):  # the two sends and a barrier per client
            message = await listener.get_message(timeout=TIMEOUT)
            assert message is not None
            if message["type"] == "message":
                published.append(message["channel"])
        assert published == [channels.groups.encode(), *[channels.connections.encode()] * (1 + len(clients))]
        for client in clients:
            await b.on_disconnected(client)
        # (the listener is the third subscriber of those two)
        assert await backplane_channels() == {**expected, channels.groups.encode(): 3,
                                              channels.connections.encode(): 3}
        await listener.aclose()
        assert all(name.startswith(base) for name in expected)
    finally:
        await probe.aclose()
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_listener_survives_malformed_messages(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    a, b = await _redis_pair(redis_url)
    probe = redis.asyncio.Redis.from_url(redis_url)
    try:
        client = Client(CountingProtocol("json"))
        await b.on_connected(client)
        await b.add_to_group(client.connection_id, "g")
        with caplog.at_level(logging.WARNING, logger="signalr.lifetime.redis"):
            await probe.publish(a.channels.all, b"\xc1 not msgpack")
            await probe.publish(a.channels.group("g"), b"\x93\x01\x02\x03")
            await probe.publish(a.channels.internal_groups, b"\x80")
            await probe.publish(a.channels.ack("B"), b"\xa3abc")
            await a.send_group("g", "still-alive", [])
            await client.expect("still-alive")
        # Both servers listen on :all and :internal:groups, so those two are reported twice.
        assert caplog.text.count("Ignoring a malformed backplane message") == 6
    finally:
        await probe.aclose()
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_redis_factory_builds_separate_publish_and_subscribe_clients(redis_url: str) -> None:
    made: list[redis.asyncio.Redis] = []

    def factory() -> redis.asyncio.Redis:
        client = redis.asyncio.Redis.from_url(redis_url)
        made.append(client)
        return client

    manager = RedisHubLifetimeManager(redis_url, prefix=uuid.uuid4().hex, redis_factory=factory)
    await manager.start()
    try:
        assert len(made) == 2 and made[0] is not made[1]
        client = Client(CountingProtocol("json"))
        await manager.on_connected(client)
        await manager.send_all("x", [])
        await client.expect("x")
    finally:
        await manager.close()


@pytest.mark.redis
async def test_arguments_that_cannot_cross_processes_raise_before_any_delivery(redis_url: str) -> None:
    a, b = await _redis_pair(redis_url)
    try:
        client = Client(CountingProtocol("json"))
        await a.on_connected(client)
        with pytest.raises(ValueError, match="cannot encode invocation of 'x' for the backplane"):
            await a.send_all("x", [object()])
        await barrier(a, client)
    finally:
        await a.close()
        await b.close()


@pytest.mark.redis
@pytest.mark.parametrize("layout", list(BackplaneLayout))
async def test_a_send_to_connections_that_cannot_cross_processes_raises_before_any_delivery(
        redis_url: str, layout: BackplaneLayout) -> None:
    a, b = await _redis_pair(redis_url, layout=layout)
    try:
        local, remote = Client(CountingProtocol("json")), Client(CountingProtocol("json"))
        await a.on_connected(local)
        await b.on_connected(remote)
        # JSON carries an integer this large to a local client; MessagePack, the backplane's format, cannot.
        with pytest.raises(ValueError, match="cannot encode invocation of 'x' for the backplane"):
            await a.send_connections([local.connection_id, remote.connection_id], "x", [10**30])
        await barrier(a, local, remote)  # neither got the half-sent message
    finally:
        await a.close()
        await b.close()


@pytest.mark.redis
async def test_redis_restart_keeps_local_delivery_and_resumes(caplog: pytest.LogCaptureFixture) -> None:
    server = RedisProcess(port=free_port())
    server.start()
    a = b = None
    try:
        a, b = await _redis_pair(server.url, ack_timeout=2.0, reconnect_max_delay=0.2)
        a1 = Client(CountingProtocol("json"))
        b1 = Client(CountingProtocol("json"))
        await a.on_connected(a1)
        await b.on_connected(b1)
        await a.send_all("before", [])
        await a1.expect("before")
        await b1.expect("before")

        server.stop()
        await a.wait_offline(TIMEOUT)
        await b.wait_offline(TIMEOUT)
        with caplog.at_level(logging.ERROR, logger="signalr.lifetime.redis"):
            # Nothing raises and local connections keep being served during the outage.
            await a.send_all("during", [1])
            await a.send_group("g", "during-group", [])
            await a.send_connection(b1.connection_id, "during-direct", [])
            await a.send_connections([b1.connection_id], "during-direct", [])
            await a.send_groups(["g"], "during-groups", [])
            a2 = Client(CountingProtocol("json"))
            b2 = Client(CountingProtocol("json"))
            await a.on_connected(a2)
            await b.on_connected(b2)
            await a.add_to_group(a2.connection_id, "g")
            await b.add_to_group(b2.connection_id, "g")
            await a1.expect("during", 1)
            with pytest.raises(GroupActionError, match="the Redis backplane is unreachable"):
                await a.add_to_group(b1.connection_id, "g")
        assert "Publishing to Redis failed" in caplog.text

        server.start()
        await a.wait_online(TIMEOUT)
        await b.wait_online(TIMEOUT)
        # Channels that appeared during the outage (b2's connection and group) are subscribed too.
        await a.send_all("after", [2])
        await a.send_group("g", "after-group", [])
        await a.send_connection(b2.connection_id, "after-direct", [])
        for client in (a1, b1, a2, b2):
            await client.expect("after", 2)
        await a2.expect("after-group")
        await b2.expect("after-group")
        await b2.expect("after-direct")
        await a.add_to_group(b1.connection_id, "g")  # remote group commands work again
        await a.send_group("g", "joined", [])
        await b1.expect("joined")
        await a2.expect("joined")
        await b2.expect("joined")
        await barrier(a, a1, b1, a2, b2)
    finally:
        for manager in (a, b):
            if manager is not None:
                await manager.close()
        server.close()
