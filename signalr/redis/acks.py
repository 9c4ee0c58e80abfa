"""Bookkeeping for backplane requests that wait for an answer from another server.

A group change for a connection hosted elsewhere is published with a fresh command id; the owning
server acks that id on the origin's ack channel, and :class:`PendingAcks` wakes the caller waiting for it.
"""

from __future__ import annotations

import asyncio
import itertools

from signalr.hubs.lifetime import GroupActionError

__all__ = ["PendingAcks", "fail_unawaited"]


def fail_unawaited(future: asyncio.Future[None], exc: BaseException) -> None:
    """Fail ``future`` unless it is already done, without any waiter being required."""
    if future.done():
        return
    future.set_exception(exc)
    # Nobody may be waiting on this future any more; reading the exception stops asyncio from
    # logging "exception was never retrieved" at garbage collection.
    future.exception()


class PendingAcks:
    """Futures of commands awaiting an ack, keyed by a command id unique within this process."""

    def __init__(self) -> None:
        self._futures: dict[int, asyncio.Future[None]] = {}
        self._ids = itertools.count(1)

    def expect(self) -> tuple[int, asyncio.Future[None]]:
        """Allocate a command id and the future its ack resolves; :meth:`discard` it when done waiting."""
        command_id = next(self._ids)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[command_id] = future
        return command_id, future

    def discard(self, command_id: int) -> None:
        self._futures.pop(command_id, None)

    def resolve(self, command_id: int) -> None:
        """Wake whoever waits for ``command_id``; a late or unknown ack is ignored."""
        future = self._futures.get(command_id)
        if future is not None and not future.done():
            future.set_result(None)

    def fail_all(self, message: str) -> None:
        """Fail every pending command with a :class:`GroupActionError` carrying ``message``."""
        for future in self._futures.values():
            fail_unawaited(future, GroupActionError(message))
