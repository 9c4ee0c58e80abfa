"""Periodic loops and task sets: the one way the gateway runs work behind its answers."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.background import Periodic, TaskSet

log = logging.getLogger("test.background")


async def test_a_kick_runs_a_round_at_once_and_failures_do_not_stop_the_loop(caplog) -> None:
    rounds: asyncio.Queue[int] = asyncio.Queue()
    count = 0

    async def step() -> None:
        nonlocal count
        count += 1
        rounds.put_nowait(count)
        if count == 1:
            raise RedisConnectionError("store down")
        if count == 2:
            raise RuntimeError("a bug in one round")

    loop = Periodic(step, interval=3600, name="test loop", log=log)
    loop.start()
    try:
        for expected in (1, 2, 3):
            loop.kick()  # an hour-long interval: only kicks make rounds happen
            assert await asyncio.wait_for(rounds.get(), 5) == expected
    finally:
        await loop.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "test.background"]
    assert messages[0] == "test loop paused: store unavailable (store down)"
    assert messages[1] == "test loop round failed"
    assert not loop.running


async def test_first_at_once_and_an_interval_that_changes() -> None:
    seen: asyncio.Queue[None] = asyncio.Queue()
    intervals = iter([0.01, 0.01, 3600.0])

    async def step() -> None:
        seen.put_nowait(None)

    loop = Periodic(step, interval=lambda: next(intervals, 3600.0), name="x", log=log, first_at_once=True)
    loop.start()
    try:
        for _ in range(3):  # at once, then twice after the short intervals
            await asyncio.wait_for(seen.get(), 5)
    finally:
        await loop.stop()


async def test_stop_lets_a_round_under_way_finish_within_the_grace_then_cancels() -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    finished = []

    async def step() -> None:
        entered.set()
        await release.wait()
        finished.append(True)

    loop = Periodic(step, interval=3600, name="x", log=log, first_at_once=True)
    loop.start()
    await asyncio.wait_for(entered.wait(), 5)
    stopping = asyncio.ensure_future(loop.stop(grace=5))
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == [True]

    entered.clear()
    release.clear()
    loop.start()
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.wait_for(loop.stop(grace=0.05), 5)  # never released: cancelled after the grace
    assert finished == [True]


async def test_a_task_set_is_bounded_logs_failures_and_drains(caplog) -> None:
    gate = asyncio.Event()
    done: list[str] = []

    async def work(name: str) -> None:
        await gate.wait()
        if name == "bad":
            raise RuntimeError("boom")
        done.append(name)

    tasks = TaskSet("work", log=log, limit=2)
    assert tasks.spawn(work("a"), label="a")
    assert tasks.spawn(work("bad"), label="bad")
    refused = work("c")
    assert not tasks.spawn(refused, label="c")  # full: closed unrun, no "never awaited" warning
    assert len(tasks) == 2
    assert await tasks.wait(0.01) is False
    gate.set()
    assert await tasks.drain(5) is True
    assert done == ["a"]
    assert any(r.getMessage() == "work bad failed" for r in caplog.records)


async def test_drain_cancels_what_does_not_finish_in_time() -> None:
    ended = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(True)

    tasks = TaskSet("slow", log=log)
    tasks.spawn(forever())
    assert await tasks.drain(0.05) is False
    assert ended == [True] and len(tasks) == 0


@pytest.mark.parametrize("grace", [0.0, 1.0])
async def test_stopping_a_loop_that_never_started_is_harmless(grace: float) -> None:
    async def step() -> None:
        return None

    await Periodic(step, interval=1, name="x", log=log).stop(grace=grace)
