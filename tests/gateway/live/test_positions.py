"""Pure logic of live positions, the wait estimate and the abandonment decision (fixed times, no I/O)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.live.estimates import estimate_wait_seconds, service_gap, wait_for_gap
from gateway.live.position_message import position_message, update_payload
from gateway.live.positions import (
    PositionBroadcaster,
    PositionTracker,
    next_round_delay,
)
from gateway.live.presence import (
    Absence,
    PresenceRecord,
    QueueSignature,
    absence_of,
    absent,
)
from tests.harness.fake_clock import FakeClock


def test_tracker_sends_only_changes_and_forgets_served() -> None:
    tracker = PositionTracker()
    assert tracker.changes(["a", "b", "c"], ["a", "c"]) == [("a", 1), ("c", 3)]
    assert tracker.changes(["a", "b", "c"], ["a", "c"]) == []
    tracker.told("d", 4)
    assert tracker.changes(["b", "c", "x", "d"], ["a", "c", "d"]) == [("c", 2)]
    # "a" left the queue: forgotten, so if it were requeued it would be told again.
    assert tracker.changes(["a", "c", "d"], ["a", "c", "d"]) == [("a", 1), ("d", 3)]


@given(st.lists(st.integers(0, 50), unique=True, max_size=30), st.lists(st.integers(0, 50), unique=True, max_size=30))
def test_tracker_positions_are_exact(queue: list[int], local: list[int]) -> None:
    tracker = PositionTracker()
    ids = [str(i) for i in queue]
    changes = dict(tracker.changes(ids, [str(i) for i in local]))
    assert changes == {str(i): ids.index(str(i)) + 1 for i in local if i in queue}


def test_coalescing_allows_one_round_per_interval() -> None:
    assert next_round_delay(last_round_at=None, now=100.0, min_interval=1.0) == 0.0
    assert next_round_delay(last_round_at=100.0, now=100.25, min_interval=1.0) == pytest.approx(0.75)
    assert next_round_delay(last_round_at=100.0, now=101.5, min_interval=1.0) == 0.0


def test_estimate_is_unknown_until_two_services() -> None:
    assert estimate_wait_seconds(3, [], now=10.0) is None
    assert estimate_wait_seconds(3, [5.0], now=10.0) is None
    assert estimate_wait_seconds(3, [5.0, 5.0], now=5.0) is None


def test_estimate_from_observed_rate_and_stall() -> None:
    served = [0.0, 10.0, 20.0, 30.0]  # one slot every 10 s
    assert estimate_wait_seconds(1, served, now=31.0) == 10
    assert estimate_wait_seconds(5, served, now=31.0) == 50
    # Nothing served for 40 s: the gap observed now is 40 s, not the historical 10 s.
    assert estimate_wait_seconds(2, served, now=70.0) == 80
    assert update_payload(2, served, 31.0) == {"queuePosition": 2, "estimatedWaitSeconds": 20}
    assert update_payload(2, [], 31.0) == {"queuePosition": 2, "estimatedWaitSeconds": None}


def record(rid: str, *, registered: float | None = None, seen: float | None = None, first: float = 0.0) -> PresenceRecord:
    return PresenceRecord(request_id=rid, registered_at=registered, last_seen=seen, first_seen=first)


def test_abandonment_decision_with_fixed_times() -> None:
    records = [
        record("never", first=0.0),                          # 60 s without Register
        record("new", first=40.0),                           # only 50 s so far
        record("live", registered=5.0, seen=89.0),           # heartbeat 1 s ago
        record("gone", registered=5.0, seen=45.0),           # last seen 45 s ago
        record("reconnecting", registered=5.0, seen=50.0),   # 40 s: within grace
        record("registered-only", registered=50.0),          # no heartbeat yet: counts from Register
    ]
    assert absent(records, now=90.0, register_timeout=60, disconnect_grace=45) == [
        ("never", Absence.UNREGISTERED), ("gone", Absence.DISCONNECTED)]
    assert absence_of(record("registered-only", registered=40.0), now=85.0, register_timeout=60,
                       disconnect_grace=45) is Absence.DISCONNECTED


def test_grace_is_longer_than_the_official_reconnect_delays() -> None:
    # @microsoft/signalr withAutomaticReconnect(): retries after 0, 2, 10 and 30 s (42 s in all).
    lost_at = 100.0
    for delay in (0, 2, 12, 42):
        assert absence_of(record("r", registered=0.0, seen=lost_at), now=lost_at + delay,
                           register_timeout=60, disconnect_grace=45) is None


def test_a_stall_counts_only_while_someone_waits() -> None:
    # Served every 10 s until t=100, then nobody waited all night; a crowd arrives at t=36,000.
    served = [float(t) for t in range(10, 101, 10)]
    assert service_gap(served, now=36_005.0) == 35_905.0  # without the arrival: the night counts as a stall
    assert service_gap(served, now=36_005.0, waiting_since=36_000.0) == 10.0  # the mean gap, as it should
    assert service_gap(served, now=36_100.0, waiting_since=36_000.0) == 100.0  # a stall since the front arrived
    assert service_gap(served, now=150.0, waiting_since=20.0) == 50.0  # waiting before the last service


async def test_the_front_arrival_reaches_the_estimate() -> None:
    sent: list[tuple[str, int, int | None]] = []

    async def queue_ids() -> list[str]:
        return ["front", "me"]

    async def served() -> list[float]:
        return [0.0, 10.0]

    async def arrived_at(request_id: str) -> float | None:
        return {"front": 995.0}.get(request_id)

    broadcaster = PositionBroadcaster(queue_ids=queue_ids, served_times=served, local_requests=lambda: ["me"],
                                      send=lambda rid, position, wait: sent.append((rid, position, wait)),
                                      clock=lambda: 1000.0, monotonic=lambda: 0.0, arrived_at=arrived_at)
    assert await broadcaster.run_once() == 1
    assert sent == [("me", 2, 20)]  # 2 x the 10 s gap, not 2 x the 990 s since the last service


async def test_broadcaster_round_sends_to_local_waiting_clients() -> None:
    sent: list[tuple[str, dict]] = []
    queue = ["a", "b", "c"]

    async def queue_ids() -> list[str]:
        return list(queue)

    async def served() -> list[float]:
        return [0.0, 10.0]

    broadcaster = PositionBroadcaster(queue_ids=queue_ids, served_times=served, local_requests=lambda: ["b", "c"],
                                      send=lambda rid, position, wait: sent.append((rid, position, wait)),
                                      clock=lambda: 10.0, monotonic=lambda: 0.0)
    assert await broadcaster.run_once() == 2
    assert sent == [("b", 2, 20), ("c", 3, 30)]
    queue.remove("a")
    sent.clear()

    def failing_send(rid: str, position: int, wait: int | None) -> None:
        if rid == "b":
            raise RuntimeError("broken connection")
        sent.append((rid, position, wait))

    broadcaster._send = failing_send  # one client's failure must not stop the others
    assert await broadcaster.run_once() == 2
    assert sent == [("c", 2, 20)]


async def test_a_client_told_its_place_without_an_estimate_hears_one_once_it_is_known() -> None:
    # Registered at the front before any service (the Register result carries no estimate), then the
    # rate becomes known from services of other requests that did not move it: it is told its estimate.
    sent: list[tuple[str, int, int | None]] = []
    served: list[float] = []

    async def queue_ids() -> list[str]:
        return ["a", "b"]

    async def served_times() -> list[float]:
        return list(served)

    broadcaster = PositionBroadcaster(queue_ids=queue_ids, served_times=served_times, local_requests=lambda: ["a"],
                                      send=lambda rid, position, wait: sent.append((rid, position, wait)),
                                      clock=lambda: 10.0, monotonic=lambda: 0.0)
    broadcaster.tracker.told("a", 1)
    assert await broadcaster.run_once() == 0 and sent == []  # no rate yet: nothing new to say
    served.extend([0.0, 10.0])
    assert await broadcaster.run_once() == 1
    assert sent == [("a", 1, 10)]
    assert await broadcaster.run_once() == 0  # told once; nothing more until something changes
    assert not broadcaster.tracker.awaiting_estimate


def test_the_tracker_says_what_a_round_told_before_the_register_result() -> None:
    tracker = PositionTracker()
    assert tracker.told("a", 6) is None
    assert tracker.changes(["x", "y", "z", "w", "a"], ["a"]) == [("a", 5)]  # a round: a moved to 5
    assert tracker.told("a", 6) == 5  # the Register result read earlier says 6: one more round is due
    assert tracker.changes(["x", "y", "z", "w", "a"], ["a"]) == [("a", 5)]  # and it puts 5 last


async def test_broadcaster_coalesces_bursts() -> None:
    rounds: list[float] = []
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    queue = ["a", "b"]

    async def queue_ids() -> list[str]:
        rounds.append(loop.time())
        if len(rounds) == 2:
            done.set()
        return list(queue)

    async def served() -> list[float]:
        return []

    broadcaster = PositionBroadcaster(queue_ids=queue_ids, served_times=served, local_requests=lambda: ["b"],
                                      send=lambda rid, position, wait: None, clock=loop.time, monotonic=loop.time,
                                      min_interval=0.3, poll_interval=60)
    broadcaster.start()
    try:
        for _ in range(20):  # a burst of changes
            broadcaster.changed()
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        broadcaster.changed()
        await asyncio.wait_for(done.wait(), 5)
        assert len(rounds) == 2
        assert rounds[1] - rounds[0] >= 0.29
    finally:
        await broadcaster.stop()


# -- encoding ------------------------------------------------------------------------------------


@given(st.integers(1, 10**12), st.none() | st.integers(1, 10**12))
def test_position_message_is_what_each_protocol_would_write(position: int, wait: int | None) -> None:
    from signalr.hubs.lifetime import invocation
    from signalr.protocol import JsonHubProtocol, MessagePackHubProtocol

    fast = position_message(position, wait)
    plain = invocation("QueuePositionUpdated", ({"queuePosition": position, "estimatedWaitSeconds": wait},))
    for protocol in (JsonHubProtocol(), MessagePackHubProtocol()):
        assert fast.bytes_for(protocol) == plain.bytes_for(protocol)


def test_estimate_from_one_gap_per_round_matches_the_direct_estimate() -> None:
    served = [0.0, 7.0, 9.0, 30.0]
    for now in (30.0, 31.0, 45.0, 100.0):
        gap = service_gap(served, now=now)
        for position in (1, 2, 17, 5000):
            assert wait_for_gap(position, gap) == estimate_wait_seconds(position, served, now=now)
    assert service_gap([1.0], now=2.0) is None
    assert wait_for_gap(3, None) is None


# -- rounds and their neighbours in the event loop -----------------------------------------------


def _static_broadcaster(queue: list[str], local: list[str], send, **kwargs) -> PositionBroadcaster:
    async def queue_ids() -> list[str]:
        return list(queue)

    async def served() -> list[float]:
        return []

    kwargs.setdefault("monotonic", lambda: 0.0)
    return PositionBroadcaster(queue_ids=queue_ids, served_times=served, local_requests=lambda: list(local),
                               send=send, clock=lambda: 0.0, **kwargs)


async def test_retired_request_hears_no_position_after_its_outcome() -> None:
    queue = ["a", "b", "c", "d"]
    sent: list[str] = []
    outcomes = ["d"]

    def send(rid: str, position: int, wait: int | None) -> None:
        sent.append(rid)
        if outcomes:  # d's SessionReady goes out while the round (snapshot with d in it) is under way
            broadcaster.retire(outcomes.pop())

    broadcaster = _static_broadcaster(queue, ["b", "c", "d"], send)
    assert await broadcaster.run_once() == 2
    assert sent == ["b", "c"]
    # The next round starts afresh: d, back in the queue (requeued, no outcome), is told again.
    sent.clear()
    queue.remove("a")
    assert await broadcaster.run_once() == 3
    assert sent == ["b", "c", "d"]


async def _race(round_budget: float) -> tuple[int, int]:
    """A round of 600 updates (0.2 ms each, on a clock that only the work moves) against a chain of 20
    loop turns of 0.6 ms each, the shape of a SessionReady's way from webhook to socket. Returns how
    many updates had gone out when the chain finished, and in all."""
    clock = FakeClock(0.0)
    sent = 0

    def send(rid: str, position: int, wait: int | None) -> None:
        nonlocal sent
        sent += 1
        clock.advance(0.0002)

    async def chain() -> int:
        for _ in range(20):
            clock.advance(0.0006)
            await asyncio.sleep(0)
        return sent

    ids = [f"r{i}" for i in range(600)]
    broadcaster = _static_broadcaster(ids, ids, send, monotonic=clock, slice_seconds=0.001,
                                      round_budget=round_budget)
    round_task = asyncio.create_task(broadcaster.run_once())
    chain_task = asyncio.create_task(chain())
    total = await asyncio.wait_for(round_task, 10)
    return await asyncio.wait_for(chain_task, 10), total


async def test_round_sends_in_slices_and_lets_busy_work_go_first() -> None:
    during, total = await _race(round_budget=0.5)
    assert total == 600
    # Yielding only between slices of five updates would let the chain's 20 turns see 100 updates.
    assert during < 50, during


async def test_round_past_its_budget_no_longer_pauses() -> None:
    during, total = await _race(round_budget=0.0)
    assert total == 600
    # Still sliced (the chain is not starved until the end), but one slice per turn of the chain.
    assert 90 <= during < 600, during


# -- end to end: the outcome overtakes nothing and is heard once ----------------------------------


class _WireClient:
    """A JSON-protocol hub client that keeps every message it receives, in order."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.messages: list[dict] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, base_url: str) -> _WireClient:
        import tornado.websocket

        ws = await tornado.websocket.websocket_connect(base_url.replace("http://", "ws://") + "/sessionHub")
        await ws.write_message('{"protocol":"json","version":1}\x1e')
        return cls(ws)

    async def _read(self) -> None:
        import json

        buffer = ""
        while (data := await self.ws.read_message()) is not None:
            *frames, buffer = (buffer + data).split("\x1e")
            self.messages.extend(json.loads(frame) for frame in frames if frame != "{}")
            self._arrived.set()

    async def wait_for(self, predicate) -> dict:
        while True:
            for message in self.messages:
                if predicate(message):
                    return message
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), 10)

    async def call(self, invocation_id: str, target: str, *args) -> dict:
        import json

        await self.ws.write_message(json.dumps({"type": 1, "invocationId": invocation_id, "target": target,
                                                "arguments": list(args)}) + "\x1e")
        return await self.wait_for(lambda m: m.get("type") == 3 and m.get("invocationId") == invocation_id)

    def targets(self) -> list[str]:
        return [m["target"] for m in self.messages if m.get("type") == 1]

    async def close(self) -> None:
        self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@pytest.mark.redis
async def test_outcome_reaches_every_local_connection_once_and_last(redis_url: str) -> None:
    import json

    import redis.asyncio as aioredis

    from gateway.live.hub import HubTuning
    from tests.harness.stack import conversation_id_of, start_hub_stack

    redis_client = aioredis.Redis.from_url(redis_url)
    stack = await start_hub_stack(redis_client, hub_tuning=HubTuning(position_interval=0.05, poll_interval=0.05))
    clients: list[_WireClient] = []
    try:
        conversations = []
        for _ in range(2):
            response = await stack.request_session()
            conversations.append(conversation_id_of(json.loads(response.body)["webSocketUrl"]))
        queued = [json.loads((await stack.request_session()).body)["uniqueRequestId"] for _ in range(2)]
        # Two tabs wait for the front request, one for the next.
        front_a, front_b, second = [await _WireClient.connect(stack.base_url) for _ in range(3)]
        clients += [front_a, front_b, second]
        for i, (client, rid) in enumerate(((front_a, queued[0]), (front_b, queued[0]), (second, queued[1]))):
            reply = await client.call(f"r{i}", "Register", rid)
            assert reply["result"]["status"] == "queued", reply
        assert (await stack.end(conversations[0])).code == 200
        ready = await asyncio.wait_for(stack.outcome(queued[0]), 10)
        await second.wait_for(lambda m: m.get("target") == "QueuePositionUpdated"
                              and m["arguments"][0]["queuePosition"] == 1)
        for client in (front_a, front_b):
            await client.wait_for(lambda m: m.get("target") == "SessionReady")
            # Anything sent after the outcome (a duplicate through the group, a stale position) would be
            # on the wire before the reply to a later call on the same connection.
            await client.call("late", "Register", "")
            assert client.targets()[-1] == "SessionReady"
            assert client.targets().count("SessionReady") == 1
            assert next(m for m in client.messages if m.get("target") == "SessionReady")["arguments"] == [
                {"webSocketUrl": ready.web_socket_url}]
    finally:
        for client in clients:
            await client.close()
        await stack.close()
        await redis_client.aclose()


async def test_round_holds_while_a_dispatch_is_under_way() -> None:
    clock = FakeClock(0.0)
    sent: list[str] = []
    dispatched = asyncio.Event()

    def send(rid: str, position: int, wait: int | None) -> None:
        sent.append(rid)
        clock.advance(0.0002)
        if len(sent) == 10:
            broadcaster.hold()
            dispatched.set()

    async def dispatch() -> int:
        await dispatched.wait()
        for _ in range(20):  # the platform call, the Redis writes: loop turns of their own
            await asyncio.sleep(0)
        seen = len(sent)
        broadcaster.unhold()
        return seen

    ids = [f"r{i}" for i in range(100)]
    broadcaster = _static_broadcaster(ids, ids, send, monotonic=clock)
    dispatch_task = asyncio.create_task(dispatch())
    assert await asyncio.wait_for(broadcaster.run_once(), 10) == 100
    # Without the hold, each of the 20 turns would have let a slice (3 updates) through.
    assert await dispatch_task <= 13


async def test_the_poll_reads_the_queue_only_when_its_signature_changed() -> None:
    """Another process's change is found by the cheap signature poll (every ``change_poll``), and an
    unchanged queue is not read again until the backstop ``poll_interval``."""
    loop = asyncio.get_running_loop()
    queue = ["a", "b", "c"]
    reads: list[list[str]] = []
    looks = 0
    sent: list[tuple[str, int]] = []
    moved = asyncio.Event()

    async def queue_ids() -> list[str]:
        reads.append(list(queue))
        return list(queue)

    async def signature() -> QueueSignature:
        nonlocal looks
        looks += 1
        return QueueSignature(length=len(queue), first=queue[0], last=queue[-1], arrivals="3", last_served=None)

    async def served() -> list[float]:
        return []

    def send(rid: str, position: int, wait: int | None) -> None:
        sent.append((rid, position))
        if position == 1:
            moved.set()

    broadcaster = PositionBroadcaster(queue_ids=queue_ids, served_times=served, local_requests=lambda: ["c"],
                                      send=send, clock=loop.time, monotonic=loop.time, min_interval=0.01,
                                      poll_interval=60, queue_signature=signature, change_poll=0.01)
    broadcaster.start()
    try:
        broadcaster.changed()
        while looks < 10:  # the first round, then polls of an unchanged queue
            await asyncio.sleep(0.01)
        assert len(reads) == 1 and sent == [("c", 3)]
        queue[:] = ["c"]  # another process served a and b: nothing told this one
        await asyncio.wait_for(moved.wait(), 5)
        assert len(reads) == 2 and sent == [("c", 3), ("c", 1)]
    finally:
        await broadcaster.stop()


async def test_a_failed_poll_waits_a_moment_and_then_reads_the_queue_in_full() -> None:
    """A store outage must not turn five polls a second into five failing calls a second, and a round that
    failed after reading the signature must not leave its change to the 5 s backstop."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    clock = [100.0]
    queue = ["a", "b"]
    failing = {"queue": False}
    reads: list[float] = []
    looks: list[float] = []
    errors: list[float] = []

    async def queue_ids() -> list[str]:
        reads.append(clock[0])
        if failing["queue"]:
            raise RedisConnectionError("down")
        return list(queue)

    async def signature() -> QueueSignature:
        looks.append(clock[0])
        return QueueSignature(length=len(queue), first=queue[0], last=queue[-1], arrivals="2", last_served=None)

    async def served() -> list[float]:
        return []

    broadcaster = PositionBroadcaster(queue_ids=queue_ids, served_times=served, local_requests=lambda: ["b"],
                                      send=lambda rid, position, wait: None, clock=lambda: clock[0],
                                      monotonic=lambda: clock[0], min_interval=0.0, poll_interval=60,
                                      queue_signature=signature, change_poll=0.2,
                                      on_store_error=lambda: errors.append(clock[0]))
    failing["queue"] = True
    await broadcaster._paced_round()  # the first round: signature read, then the queue read fails
    assert len(reads) == 1 and len(looks) == 1 and errors == [100.0]
    clock[0] += 0.5  # within the retry delay: no store call at all
    await broadcaster._paced_round()
    assert len(reads) == 1 and len(looks) == 1
    failing["queue"] = False
    clock[0] += 0.6  # past it: the same (unchanged) signature, yet the queue is read in full
    await broadcaster._paced_round()
    assert len(reads) == 2
