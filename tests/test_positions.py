"""Pure logic of live positions, the wait estimate and the abandonment decision (fixed times, no I/O)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.abandonment import PresenceRecord, Verdict, decide, verdict_for
from gateway.positions import (
    PositionBroadcaster,
    PositionTracker,
    estimate_wait_seconds,
    next_round_delay,
    update_payload,
)


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
    assert decide(records, now=90.0, register_timeout=60, disconnect_grace=45) == [
        ("never", Verdict.UNREGISTERED), ("gone", Verdict.DISCONNECTED)]
    assert verdict_for(record("registered-only", registered=40.0), now=85.0, register_timeout=60,
                       disconnect_grace=45) is Verdict.DISCONNECTED


def test_grace_is_longer_than_the_official_reconnect_delays() -> None:
    # @microsoft/signalr withAutomaticReconnect(): retries after 0, 2, 10 and 30 s (42 s in all).
    lost_at = 100.0
    for delay in (0, 2, 12, 42):
        assert verdict_for(record("r", registered=0.0, seen=lost_at), now=lost_at + delay,
                           register_timeout=60, disconnect_grace=45) is None


async def test_broadcaster_round_sends_to_local_waiting_clients() -> None:
    sent: list[tuple[str, dict]] = []
    queue = ["a", "b", "c"]

    async def queue_ids() -> list[str]:
        return list(queue)

    async def served() -> list[float]:
        return [0.0, 10.0]

    broadcaster = PositionBroadcaster(queue_ids=queue_ids, served_times=served, local_requests=lambda: ["b", "c"],
                                      send=lambda rid, payload: sent.append((rid, dict(payload))),
                                      clock=lambda: 10.0, monotonic=lambda: 0.0)
    assert await broadcaster.run_once() == 2
    assert sent == [("b", {"queuePosition": 2, "estimatedWaitSeconds": 20}),
                    ("c", {"queuePosition": 3, "estimatedWaitSeconds": 30})]
    queue.remove("a")
    sent.clear()

    def failing_send(rid: str, payload: dict) -> None:
        if rid == "b":
            raise RuntimeError("broken connection")
        sent.append((rid, dict(payload)))

    broadcaster._send = failing_send  # one client's failure must not stop the others
    assert await broadcaster.run_once() == 2
    assert sent == [("c", {"queuePosition": 2, "estimatedWaitSeconds": 20})]


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
                                      send=lambda rid, payload: None, clock=loop.time, monotonic=loop.time,
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


@pytest.mark.parametrize("name", ["register", "touch", "scan", "abandon"])
def test_presence_script_headers_document_keys_arguments_and_return(name: str) -> None:
    import re
    from importlib import resources

    text = (resources.files("gateway") / "lua" / f"presence_{name}.lua").read_text()
    lines = text.splitlines()
    header = [line for line in lines[:next(i for i, line in enumerate(lines) if not line.startswith("--"))]]
    code = "\n".join(line.split("--", 1)[0] for line in lines[len(header):])
    head = "\n".join(header)
    for kind in ("KEYS", "ARGV"):
        used = {int(n) for n in re.findall(kind + r"\[(\d+)\]", code)}
        documented = {int(n) for n in re.findall(r"^--\s+" + kind + r"\[(\d+)", head, re.MULTILINE)}
        assert used <= documented, (kind, used - documented)
    assert "-- Returns" in head
