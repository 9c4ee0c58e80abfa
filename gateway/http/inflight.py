"""Requests in flight, so that a graceful shutdown waits for exactly the requests that can still finish."""

from __future__ import annotations

import asyncio


class InflightRequests:
    """Requests being handled, so that a graceful shutdown can wait for them.

    A request is in flight from routing until its handler finishes, or until its client goes away
    before the request was fully received: then no handler will ever finish it, and counting it would
    make a shutdown wait the whole grace for nothing. Requests are keyed by their connection object,
    so each end may be reported more than once.
    """

    def __init__(self) -> None:
        self._requests: set[object] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return len(self._requests)

    def started(self, request: object) -> None:
        self._requests.add(request)
        self._idle.clear()

    def finished(self, request: object) -> None:
        self._requests.discard(request)
        if not self._requests:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
