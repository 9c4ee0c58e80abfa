"""Client-to-server streams: what a hub method with an ``AsyncIterator`` parameter receives, and where
in its arguments each goes."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from signalr.hubs.hub import HubError

if TYPE_CHECKING:
    from signalr.hubs.methods import HubMethod


class UploadStream(AsyncIterator[Any]):
    """A client-to-server stream handed to a hub method as an async iterator.

    Bounded like ASP.NET's ``StreamBufferCapacity``: the reader loop waits when the method lags.
    """

    def __init__(self, capacity: int) -> None:
        self._items: deque[Any] = deque()
        self._capacity = capacity
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._error: str | None = None
        self.completed = False

    def offer(self, item: Any) -> bool:
        """Add ``item`` unless the buffer is full (then :meth:`put` must wait); True when done."""
        if len(self._items) >= self._capacity and not self.completed:
            return False
        if not self.completed:
            self._items.append(item)
            self._readable.set()
        return True

    async def put(self, item: Any) -> None:
        while len(self._items) >= self._capacity and not self.completed:
            self._writable.clear()
            await self._writable.wait()
        if not self.completed:
            self._items.append(item)
            self._readable.set()

    def complete(self, error: str | None = None) -> None:
        """End the stream; ``error`` makes the reader raise :class:`HubError` after the items."""
        if not self.completed:
            self.completed = True
            self._error = error
            self._readable.set()
            self._writable.set()

    def __aiter__(self) -> UploadStream:
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self.completed:
                if self._error is not None:
                    raise HubError(self._error)
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._writable.set()
        return item


def merge_arguments(method: HubMethod, wire: list[Any], uploads: list[UploadStream]) -> list[Any]:
    """Interleave wire arguments and upload streams in signature order."""
    wire_iter = iter(wire)
    upload_iter = iter(uploads)
    streams = set(method.stream_parameters)
    return [next(upload_iter) if name in streams else next(wire_iter) for name in method.parameter_order]
