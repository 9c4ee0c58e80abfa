"""Server-Sent Events transport (server→client); client→server bytes arrive by POST.

Wire format (one event per drained batch): every line of the payload, split on LF with a trailing
CR stripped, becomes ``data: <line>\\r\\n``; a blank ``\\r\\n`` ends the event. A ``:\\r\\n``
comment is flushed first because some browsers fire EventSource ``open`` only on the first bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from signalr.connections.connection import HttpConnection

log = logging.getLogger("signalr.transport")

SSE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache,no-store"),
    ("Pragma", "no-cache"),
    # Also stops frameworks from gzipping text/*, which would hold events back.
    ("Content-Encoding", "identity"),
    ("Long-Running", "true"),
)
SSE_PREAMBLE = b":\r\n"


def format_event(payload: bytes) -> bytes:
    """Encode ``payload`` as one unnamed SSE event."""
    lines = payload.split(b"\n")
    if len(lines) > 1 and lines[-1] == b"":
        lines.pop()
    out = bytearray()
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        out += b"data: " + line + b"\r\n"
    out += b"\r\n"
    return bytes(out)


async def run_stream(connection: HttpConnection, write: Callable[[bytes], Awaitable[None]], serial: int) -> None:
    """Write the preamble, then one event per outbox batch until the outbox closes.

    :param write: writes and flushes bytes on the response; raises when the client went away.
    """
    await write(SSE_PREAMBLE)
    while connection.is_current(serial) or connection.disposed:
        batch = await connection.outbox.next_batch()
        if batch is None:
            return
        for frame in batch:
            await write(format_event(frame.data))
