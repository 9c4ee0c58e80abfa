"""Long Polling transport: each GET drains whatever the outbox holds.

Status rules: the first poll returns 200 empty at once (the JS client only then sends its
handshake); later polls wait up to the poll timeout for data (200 with data, or 200 empty); a
connection closed with nothing left answers 204, as does a poll superseded by a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from signalr.connections.connection import HttpConnection

NO_CACHE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Cache-Control", "no-cache, no-store"),
    ("Pragma", "no-cache"),
    ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PollResponse:
    """What one poll answers."""

    status: int
    body: bytes = b""
    content_type: str = "application/octet-stream"
    closed: bool = False  # the connection is finished; the adapter forgets it


async def poll(
    connection: HttpConnection,
    *,
    first: bool,
    timeout: float,
    superseded: asyncio.Event,
) -> PollResponse:
    """Answer one long-poll GET.

    :param first: this poll started the application.
    :param timeout: the poll timeout.
    :param superseded: set when a newer poll took over (or the client went away).
    """
    if first:
        return PollResponse(status=200)
    waiter = asyncio.ensure_future(connection.outbox.next_batch(timeout))
    stop = asyncio.ensure_future(superseded.wait())
    try:
        await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not waiter.done():
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        return PollResponse(status=204)
    batch = waiter.result()
    if batch is None:
        return PollResponse(status=204, closed=True)
    if not batch:
        return PollResponse(status=200, content_type="text/plain")
    return PollResponse(status=200, body=b"".join(f.data for f in batch))
