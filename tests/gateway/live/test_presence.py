"""Hub presence and the abandonment reaper against the admission store, with an injected clock.

Each test runs on a real ``redis-server`` and on the embedded store (``make_client``), except the cost
test, which counts the commands Redis executes in one reaper round on its own server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from importlib import resources

import pytest
import redis.asyncio as aioredis

from gateway.admission.store import AdmissionStore, Caps, ClaimedEntry, Outcome
from gateway.live.abandonment import AbandonmentReaper
from gateway.live.presence import DISPATCH_RECHECK, Absence, PresenceStore
from tests.harness.fake_clock import FakeClock

PREFIX = "iqra:"
TIMEOUT = 60.0
GRACE = 45.0
FULL = Caps(global_cap=0)


class Parts:
    """The admission store, the presence store and a reaper sharing one client and one clock."""

    def __init__(self, client: aioredis.Redis, clock: FakeClock) -> None:
        self.client = client
        self.clock = clock
        self.store = AdmissionStore(client, key_prefix=PREFIX, clock=clock)
        self.presence = PresenceStore(client, admission=self.store, key_prefix=PREFIX, clock=clock)
        self.left: list[tuple[str, str]] = []
        self.reaper = AbandonmentReaper(presence=self.presence, leave=self._leave, clock=clock,
                                        register_timeout=TIMEOUT, disconnect_grace=GRACE)

    async def _leave(self, request_id: str, *, reason: str) -> bool:
        self.left.append((request_id, reason))
        return await self.store.remove(request_id)

    async def queue(self, *ids: str, caps: Caps = FULL) -> None:
        for rid in ids:
            result = await self.store.admit(request_id=rid, campaign="c", data={"rid": rid}, caps=caps,
                                            pending_lease_seconds=30, max_queue_length=100_000)
            assert result.outcome is Outcome.QUEUED

    async def scan(self, **kwargs: object) -> list[str]:
        records = await self.presence.scan(register_timeout=TIMEOUT, disconnect_grace=GRACE, **kwargs)
        return [r.request_id for r in records]

    async def score(self, key: str, rid: str) -> float | None:
        return await self.client.zscore(key, rid)


@pytest.fixture
def parts(store_client: aioredis.Redis, clock: FakeClock) -> Parts:
    return Parts(store_client, clock)


async def test_register_and_touch_move_the_deadline(parts: Parts) -> None:
    keys, t0 = parts.presence.keys, parts.clock.now
    await parts.queue("a")
    assert await parts.scan() == []
    assert await parts.score(keys.waiting, "a") == t0          # first seen: due at t0 + timeout
    parts.clock.advance(10)
    assert (await parts.presence.register("a")).recorded is True
    assert await parts.score(keys.waiting, "a") is None       # the register timeout no longer applies
    assert await parts.score(keys.last_seen, "a") == t0 + 10
    parts.clock.advance(10)
    assert await parts.presence.touch(["a", "a", "never-registered"]) == 1
    assert await parts.score(keys.last_seen, "a") == t0 + 20  # due at t0 + 20 + grace
    assert await parts.score(keys.last_seen, "never-registered") is None
    parts.clock.now = t0 + 20 + GRACE - 0.5
    assert await parts.scan() == []
    parts.clock.now = t0 + 20 + GRACE
    (record,) = await parts.presence.scan(register_timeout=TIMEOUT, disconnect_grace=GRACE)
    assert (record.request_id, record.registered_at, record.last_seen, record.first_seen) == (
        "a", t0 + 10, t0 + 20, None)


async def test_never_registered_entry_goes_after_the_timeout_and_not_before(parts: Parts) -> None:
    keys, t0 = parts.presence.keys, parts.clock.now
    await parts.queue("never", "later")
    assert await parts.reaper.run_once() == []                # first sight of both
    parts.clock.now = t0 + TIMEOUT - 0.5
    assert (await parts.presence.register("later")).recorded is True
    assert await parts.reaper.run_once() == []
    assert await parts.store.queue_ids() == ["never", "later"]
    parts.clock.now = t0 + TIMEOUT
    assert await parts.reaper.run_once() == [("never", Absence.UNREGISTERED)]
    assert parts.left == [("never", "abandoned (unregistered)")]
    assert await parts.store.queue_ids() == ["later"]
    assert (await parts.store.status("never")).status == "failed"
    # The next round finds it due and gone: its presence is forgotten, the abandonment mark included.
    assert await parts.reaper.run_once() == []
    assert await parts.score(keys.waiting, "never") is None
    assert await parts.client.hexists(keys.abandoned, "never") == 0


async def test_reconnecting_client_keeps_its_place(parts: Parts) -> None:
    t0 = parts.clock.now
    await parts.queue("a", "b", "c")
    for rid in ("a", "b", "c"):
        assert (await parts.presence.register(rid)).recorded
    parts.clock.advance(5)
    await parts.presence.touch(["a", "b", "c"])               # b's last connection goes now
    parts.clock.now = t0 + 5 + GRACE - 1
    await parts.presence.touch(["a", "c"])
    assert (await parts.presence.register("b")).recorded is True         # b reconnected within its grace
    parts.clock.now = t0 + 5 + GRACE + 1
    await parts.presence.touch(["a", "c"])
    assert await parts.reaper.run_once() == []
    assert await parts.store.queue_ids() == ["a", "b", "c"]
    # b vanishes for good; a and c keep heartbeating.
    parts.clock.advance(GRACE)
    await parts.presence.touch(["a", "c"])
    assert await parts.reaper.run_once() == [("b", Absence.DISCONNECTED)]
    assert await parts.store.queue_ids() == ["a", "c"]


async def test_a_client_coming_back_and_the_reaper_cannot_both_win(parts: Parts) -> None:
    await parts.queue("back", "gone")
    await parts.scan()
    parts.clock.advance(TIMEOUT)
    assert await parts.scan() == ["back", "gone"]             # the reaper's snapshot: both due
    assert (await parts.presence.register("back")).recorded is True      # the client wins the race...
    assert await parts.presence.abandon("back", register_timeout=TIMEOUT, disconnect_grace=GRACE) is None
    assert await parts.presence.abandon("gone", register_timeout=TIMEOUT,
                                        disconnect_grace=GRACE) is Absence.UNREGISTERED
    gone = await parts.presence.register("gone")                          # ...or the reaper does
    assert (gone.recorded, gone.abandoned, gone.status.status) == (False, True, "queued")
    assert await parts.scan() == ["gone"]


async def test_register_reads_the_status_and_records_only_a_waiting_request(parts: Parts) -> None:
    keys = parts.presence.keys
    unknown = await parts.presence.register("never-seen")
    assert unknown == (None, False, False)
    assert await parts.client.hexists(keys.registered, "never-seen") == 0
    await parts.queue("first", "second")
    second = await parts.presence.register("second")
    assert (second.status.status, second.status.position, second.recorded, second.abandoned) == (
        "queued", 2, True, False)
    (claimed,) = await parts.store.claim(caps=Caps(global_cap=1), pending_lease_seconds=30, limit=1)
    assert claimed.request_id == "first"
    dispatching = await parts.presence.register("first")
    assert (dispatching.status.status, dispatching.recorded) == ("dispatching", True)
    await parts.client.hdel(keys.registered, "first")
    await parts.store.set_outcome("first", status="ready", web_socket_url="wss://audio/1", ttl_seconds=60)
    served = await parts.presence.register("first")
    assert (served.status.status, served.status.web_socket_url, served.recorded) == ("ready", "wss://audio/1", False)
    assert await parts.client.hexists(keys.registered, "first") == 0  # nobody waits for a served request
    # The same answer as the admission store's own status, field for field.
    assert served.status == await parts.store.status("first")
    assert (await parts.presence.register("second")).status == await parts.store.status("second")


async def test_entry_being_dispatched_is_kept_and_looked_at_again(parts: Parts) -> None:
    keys = parts.presence.keys
    await parts.queue("a")
    assert (await parts.presence.register("a")).recorded
    (claimed,) = await parts.store.claim(caps=Caps(global_cap=1), pending_lease_seconds=30, limit=1)
    parts.clock.advance(GRACE + 1)
    assert await parts.scan() == []                           # not queued: nothing to abandon
    assert await parts.client.hexists(keys.registered, "a") == 1  # it may come back: presence kept
    assert await parts.score(keys.last_seen, "a") == parts.clock.now - GRACE + DISPATCH_RECHECK
    assert await parts.store.requeue_front(claimed) == 1       # the platform was full
    parts.clock.advance(DISPATCH_RECHECK - 0.5)
    assert await parts.scan() == []
    parts.clock.advance(0.5)
    assert await parts.scan() == ["a"]


async def test_presence_of_finished_requests_is_forgotten_when_due(parts: Parts) -> None:
    keys = parts.presence.keys
    await parts.queue("served", "left", "live")
    for rid in ("served", "left", "live"):
        assert (await parts.presence.register(rid)).recorded
    await parts.store.set_outcome("served", status="ready", web_socket_url="wss://x", ttl_seconds=60)
    assert await parts.store.remove("left")
    parts.clock.advance(GRACE)
    await parts.presence.touch(["live"])
    assert await parts.scan() == []
    assert await parts.client.hkeys(keys.registered) == [b"live"]
    assert await parts.client.zrange(keys.last_seen, 0, -1) == [b"live"]
    # A late heartbeat of a finished request cannot bring its presence back.
    assert await parts.presence.touch(["served", "left"]) == 0
    assert await parts.client.zcard(keys.last_seen) == 1


async def test_entries_put_back_at_the_front_are_tracked(parts: Parts) -> None:
    keys, t0 = parts.presence.keys, parts.clock.now
    one = Caps(global_cap=1)
    direct = await parts.store.admit(request_id="direct", campaign="c", data={}, caps=one,
                                     pending_lease_seconds=30, max_queue_length=100)
    assert direct.outcome is Outcome.ADMITTED
    await parts.queue("q1", "q2", caps=one)
    await parts.scan()
    parts.clock.advance(1)
    # The platform refused the direct admission: it is queued at the front with a score below the cursor.
    entry = ClaimedEntry(request_id="direct", campaign="c", lease_id=direct.lease_id or "", data={})
    assert await parts.store.requeue_front(entry) == 1
    await parts.scan()
    assert await parts.score(keys.waiting, "direct") == t0 + 1
    assert await parts.score(keys.waiting, "q1") == t0
    parts.clock.now = t0 + 1 + TIMEOUT
    assert await parts.scan() == ["direct", "q1", "q2"]


async def test_new_arrivals_are_tracked_a_bounded_number_per_round(parts: Parts) -> None:
    keys, t0 = parts.presence.keys, parts.clock.now
    await parts.queue(*(f"r{i}" for i in range(7)))
    for expected in (3, 6, 7, 7):
        await parts.scan(limit=3, window=1)
        assert await parts.client.zcard(keys.waiting) == expected
        parts.clock.advance(1)
    assert await parts.score(keys.waiting, "r0") == t0
    assert await parts.score(keys.waiting, "r6") == t0 + 2    # tracked in the third round


async def test_a_reset_admission_store_restarts_the_arrivals_cursor(parts: Parts) -> None:
    keys = parts.presence.keys
    await parts.queue("a", "b", "c")
    await parts.scan()
    admission = parts.store.keys
    await parts.client.delete(admission.queue, admission.seq, admission.entries, admission.entry_campaign)
    await parts.queue("fresh")                                 # score 1, below the old cursor (3)
    await parts.scan(window=1)
    assert await parts.score(keys.waiting, "fresh") == parts.clock.now


def test_presence_script_headers_match_their_code() -> None:
    for name in ("register", "touch", "scan", "abandon"):
        lines = (resources.files("gateway.live") / "lua" / f"presence_{name}.lua").read_text().splitlines()
        end = next(i for i, line in enumerate(lines) if not line.startswith("--"))
        head, code = "\n".join(lines[:end]), "\n".join(line.split("--", 1)[0] for line in lines[end:])
        for kind in ("KEYS", "ARGV"):
            used = {int(n) for n in re.findall(kind + r"\[(\d+)\]", code)}
            # "KEYS[1..13]" documents a range (the admission prelude's shared keys).
            documented = {n for first, last in re.findall(r"^--\s+" + kind + r"\[(\d+)(?:\.\.(\d+))?", head, re.MULTILINE)
                          for n in range(int(first), int(last or first) + 1)}
            assert used <= documented == set(range(1, max(documented) + 1)), (name, kind)
        assert "-- Returns" in head and "Complexity" in head, name


@pytest.fixture
async def own_redis(redis_proc):
    """A server of its own, so the command counts below are this test's alone."""
    client = aioredis.Redis.from_url(redis_proc.url)
    yield client
    await client.aclose()


async def _commands_run(client: aioredis.Redis, action: Callable[[], Awaitable[None]]) -> dict[str, int]:
    """Redis commands executed while ``action`` ran, by name (those run inside scripts included)."""
    await client.config_resetstat()
    await action()
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): row["calls"] for name, row in stats.items()
            if not name.startswith(("cmdstat_config", "cmdstat_info"))}


@pytest.mark.redis
async def test_a_round_over_10000_live_entries_reads_only_what_is_due(own_redis: aioredis.Redis) -> None:
    parts = Parts(own_redis, FakeClock())
    clock = parts.clock
    ids = [f"r{i:05d}" for i in range(10_000)]

    async def join(rid: str) -> None:
        await parts.store.admit(request_id=rid, campaign="c", data={}, caps=FULL, pending_lease_seconds=30,
                                max_queue_length=100_000)
        (await parts.presence.register(rid)).recorded

    for start in range(0, len(ids), 50):                      # 50 clients at a time: quicker set-up
        await asyncio.gather(*(join(rid) for rid in ids[start:start + 50]))
    for _ in range(len(ids) // 1000):
        await parts.scan()                                     # first sight of everything, 1000 a round
    assert await own_redis.hget(parts.presence.keys.cursor, "arrivals") == str(len(ids)).encode()
    clock.advance(2)
    await parts.presence.touch(ids)                            # every client heartbeats: nobody due

    async def round_() -> None:
        await parts.reaper.run_once()

    idle = await _commands_run(own_redis, round_)
    assert parts.left == []
    # The lock (set, get, pexpire), the script, and a fixed handful of O(log N) reads inside it: the
    # queue is read only for arrivals above the cursor (none) and its front entry (unchanged).
    assert sum(idle.values()) <= 12, idle
    assert not {"zscore", "hexists", "hkeys", "zadd"} & set(idle), idle
    assert idle.get("zrange", 0) == 1 and idle.get("zrangebyscore", 0) == 3, idle

    # Ten of them go quiet: the round's work grows by those ten, not by the queue.
    clock.advance(GRACE)
    await parts.presence.touch(ids[10:])
    busy = await _commands_run(own_redis, round_)
    assert sorted(parts.left) == [(rid, "abandoned (disconnected)") for rid in ids[:10]]
    assert sum(busy.values()) - sum(idle.values()) <= 10 * 25, busy


async def test_scan_refuses_bounds_that_would_stall_it(parts: Parts) -> None:
    for bad in ({"limit": 0}, {"window": 0}, {"recheck": 0.0}):
        with pytest.raises(ValueError, match="limit and window"):
            await parts.scan(**bad)


async def test_the_queue_signature_changes_whenever_a_place_may_have(parts: Parts) -> None:
    """What lets a process read the queue only when it changed: every kind of change moves the signature
    (arrival, a leave from the middle, a dispatch, a request put back at the front, a service recorded),
    and nothing else does."""
    signature = parts.presence.queue_signature
    await parts.queue("a", "b", "c", "d")
    seen = await signature()
    assert await signature() == seen

    async def moved() -> bool:
        nonlocal seen
        now = await signature()
        changed, seen = now != seen, now
        return changed

    await parts.queue("e")
    assert await moved()
    await parts.store.remove("c")
    assert await moved()
    claimed = await parts.store.claim(caps=Caps(global_cap=1), pending_lease_seconds=30, limit=1)
    assert [entry.request_id for entry in claimed] == ["a"]
    assert await moved()
    assert await parts.store.requeue_front(claimed[0]) == 1
    assert await moved()
    await parts.presence.record_served("x")
    assert await moved()
    # Nothing happened: the same signature (no queue read); reads themselves change nothing.
    await parts.store.queue_ids()
    await parts.store.status("b")
    assert not await moved()
