"""Work that runs behind the requests: periodic loops and sets of background tasks.

Every loop of the gateway (the dispatcher's claims, the platform capacity sync, the abandonment reaper, the
presence heartbeat, the store epoch check, the renewal of queued rate-limit units, the reload of the
MaxMind databases) is a :class:`Periodic`, and every group of tasks started behind an answer (dispatches,
take-backs after lost replies, the hub's deliveries, lingering closes) a :class:`TaskSet`. So each has
the same answers to the questions a failing machine asks: a step that fails is logged and the loop goes
on (a store outage is one warning per step, which the log throttle summarises); a stop lets a step under
way finish for a bounded time, then cancels it; a set of tasks has a bound, and its failures are logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError


class Periodic:
    """Runs ``step`` every ``interval`` seconds, or at once when kicked, until stopped.

    :param step: one round of the loop's work.
    :param interval: seconds between rounds, or a function giving them (read before every wait).
    :param name: what the loop does, for its task and its log lines ("queue dispatch").
    :param log: the logger of the loop's owner.
    :param first_at_once: run the first round at :meth:`start` rather than after one interval.
    """

    def __init__(self, step: Callable[[], Awaitable[Any]], *, interval: float | Callable[[], float], name: str,
                 log: logging.Logger, first_at_once: bool = False) -> None:
        self._step = step
        self._interval = interval if callable(interval) else (lambda: interval)
        self.name = name
        self._log = log
        self._first_at_once = first_at_once
        self._kicked = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._stopping = False
        self._kicked = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=self.name)

    def kick(self) -> None:
        """Run the next round now rather than at the end of the interval."""
        self._kicked.set()

    async def stop(self, *, grace: float = 0.0) -> None:
        """Stop; a round under way may finish within ``grace`` seconds (cancelling a store call mid-flight
        can leave its connection in doubt), after which it is cancelled."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._kicked.set()
        if grace > 0:
            done, _ = await asyncio.wait({task}, timeout=grace)
            if done:
                return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        if not self._first_at_once:
            await self._wait()
        while not self._stopping:
            await self._round()
            await self._wait()

    async def _round(self) -> None:
        try:
            await self._step()
        except asyncio.CancelledError:
            raise
        except RedisError as exc:
            self._log.warning("%s paused: store unavailable (%s)", self.name, exc)
        except Exception:  # noqa: BLE001 - the loop must outlive a bug in one round
            self._log.exception("%s round failed", self.name)

    async def _wait(self) -> None:
        try:
            await asyncio.wait_for(self._kicked.wait(), self._interval())
        except TimeoutError:
            pass
        self._kicked.clear()


class TaskSet:
    """Background tasks of one kind: kept alive (the event loop holds only weak references), bounded,
    their failures logged, and waited for or cancelled together.

    :param name: what the tasks do, for log lines ("take-back").
    :param log: the logger of the set's owner.
    :param limit: most tasks at once; beyond it :meth:`spawn` refuses (None: no limit).
    """

    def __init__(self, name: str, *, log: logging.Logger, limit: int | None = None) -> None:
        self.name = name
        self._log = log
        self._limit = limit
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, Any], *, label: str = "",
              on_done: Callable[[], None] | None = None) -> bool:
        """Run ``work`` in the background; False (and ``work`` closed unrun) when the set is full.

        :param label: names the task in its failure's log line (a request id, say).
        :param on_done: called when the task ends, however it ends.
        """
        if self._limit is not None and len(self._tasks) >= self._limit:
            work.close()
            return False
        task = asyncio.get_running_loop().create_task(work, name=f"{self.name}-{label}" if label else self.name)
        self._tasks.add(task)

        def finished(done: asyncio.Task[Any]) -> None:
            self._tasks.discard(done)
            if not done.cancelled() and done.exception() is not None:
                self._log.error("%s %s failed", self.name, label, exc_info=done.exception())
            if on_done is not None:
                on_done()

        task.add_done_callback(finished)
        return True

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for the tasks running now (up to ``timeout`` s); True when none is left."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        return not self._tasks

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s, then cancel what is left; True when everything had finished."""
        if await self.wait(timeout):
            return True
        await self.cancel()
        return False

    async def cancel(self) -> None:
        """Cancel every task and wait for them to end."""
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
