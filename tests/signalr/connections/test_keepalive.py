"""Keep-alive, client timeout, handshake timeout and reaping.

Heartbeat-driven behaviour is tested twice: with a fake clock against ``ConnectionManager.scan``
(deterministic arithmetic) and end-to-end with short intervals on a real server.
"""

from __future__ import annotations

import asyncio

from examples.chat import ChatHub
from signalr.connections.manager import ConnectionManager
from signalr.options import HttpTransportType
from tests.harness.signalr_server import JsonWs, running


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_scan_reaps_only_connections_inactive_past_the_timeout() -> None:
    clock = FakeClock()
    manager = ConnectionManager(disconnect_timeout=15, clock=clock)
    idle = manager.create(negotiate_version=1, stateful_reconnect=False)
    busy = manager.create(negotiate_version=0, stateful_reconnect=False)
    assert busy.token == busy.connection_id and idle.token != idle.connection_id
    ticks: list[float] = []
    busy.on_tick = ticks.append
    busy.activate(HttpTransportType.WEBSOCKETS)
    clock.now += 15
    manager.scan(clock.now)
    assert manager.get(idle.token) is idle  # exactly at the limit: kept
    clock.now += 0.5
    manager.scan(clock.now)
    assert manager.get(idle.token) is None and idle.disposed
    assert manager.get(busy.token) is busy and ticks == [1015.0, 1015.5]


def test_scan_survives_a_failing_tick() -> None:
    clock = FakeClock()
    manager = ConnectionManager(disconnect_timeout=15, clock=clock)
    broken = manager.create(negotiate_version=1, stateful_reconnect=False)
    fine = manager.create(negotiate_version=1, stateful_reconnect=False)

    def explode(now: float) -> None:
        raise RuntimeError("tick failed")

    seen: list[float] = []
    broken.on_tick = explode
    fine.on_tick = seen.append
    manager.scan(clock.now)
    assert seen == [clock.now]


def test_a_tick_that_says_when_it_is_next_due_is_not_run_before_then() -> None:
    """How 20,000 idle WebSockets cost a Ping's visit every 15 s each rather than a visit a second: a tick
    returning a time is run again from that time on; one returning None on every heartbeat."""
    clock = FakeClock()
    manager = ConnectionManager(disconnect_timeout=15, clock=clock)
    sparse = manager.create(negotiate_version=1, stateful_reconnect=False)
    every = manager.create(negotiate_version=1, stateful_reconnect=False)
    for connection in (sparse, every):
        connection.activate(HttpTransportType.WEBSOCKETS)
    sparse_ticks: list[float] = []
    every_ticks: list[float] = []

    def sparse_tick(now: float) -> float:
        sparse_ticks.append(now)
        return now + 15

    sparse.on_tick = sparse_tick
    every.on_tick = every_ticks.append
    for _ in range(17):
        manager.scan(clock.now)
        clock.now += 1
    assert sparse_ticks == [1000.0, 1015.0] and len(every_ticks) == 17
    manager.remove(sparse)
    clock.now += 30
    manager.scan(clock.now)
    assert sparse_ticks == [1000.0, 1015.0] and manager.get(sparse.token) is None


async def test_a_negotiated_but_never_connected_connection_is_reaped_then_404() -> None:
    clock = FakeClock()
    async with running(clock=clock, heartbeat_interval=3600) as h:
        token = (await h.negotiate())["connectionToken"]
        clock.now += 10
        h.server.connections.scan(clock.now)
        assert (await h.fetch(f"?id={token}&_=1")).code == 200  # still there: attaches LP
        token2 = (await h.negotiate())["connectionToken"]
        clock.now += 16
        h.server.connections.scan(clock.now)
        assert (await h.fetch(f"?id={token2}")).code == 404


async def test_an_idle_connection_gets_pings() -> None:
    async with running(keep_alive_interval=0.1, heartbeat_interval=0.02) as h:
        c = await JsonWs.connect(h)
        assert await c.next(timeout=2) == {"type": 6}
        assert await c.next(timeout=2) == {"type": 6}
        c.close()


async def test_client_timeout_after_the_first_ping() -> None:
    async with running(client_timeout_interval=0.3, heartbeat_interval=0.02, keep_alive_interval=10) as h:
        c = await JsonWs.connect(h)
        await c.send({"type": 6})
        assert await c.next(timeout=5) == {
            "type": 7,
            "error": "Connection closed with an error.",
            "allowReconnect": True,
        }
        assert await c.closed() == []


async def test_a_client_that_never_pings_is_timed_out_too() -> None:
    # Unlike ASP.NET, whose clock starts at the first Ping, ours runs from the handshake on (issue 11):
    # a connection that sends nothing at all must not hold its resources for ever.
    async with running(client_timeout_interval=0.3, heartbeat_interval=0.02, keep_alive_interval=0.05) as h:
        c = await JsonWs.connect(h)
        seen = await c.closed()
        assert seen[-1] == {"type": 7, "error": "Connection closed with an error.", "allowReconnect": True}
        assert all(m == {"type": 6} for m in seen[:-1])


class SlowHub(ChatHub):
    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"


async def test_no_client_timeout_while_a_method_runs() -> None:
    async with running(SlowHub, client_timeout_interval=0.2, heartbeat_interval=0.02, keep_alive_interval=10) as h:
        c = await JsonWs.connect(h)
        await c.send({"type": 6})
        assert (await c.invoke("Slow", 0.6))["result"] == "done"
        # After the method finished the timeout applies again.
        assert (await c.next_non_ping(timeout=5))["type"] == 7  # type: ignore[index]
        c.close()


async def test_handshake_timeout_on_long_polling() -> None:
    async with running(handshake_timeout=0.2) as h:
        token = (await h.negotiate())["connectionToken"]
        assert (await h.fetch(f"?id={token}")).code == 200
        assert (await h.fetch(f"?id={token}")).body == b'{"error":"Handshake was canceled."}\x1e'
        assert (await h.fetch(f"?id={token}")).code == 204
