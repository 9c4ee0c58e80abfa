"""Raw HTTP/1.1 over sockets, for the edge tests: what an HTTP client library would never send.

Connections can come from any loopback address (``127.0.0.2`` is another client to the server), and
a response is read to the end of the connection, since every refusal at the edge closes it.
"""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass

import ujson

TIMEOUT = 30


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> object:
        return ujson.loads(self.body)


def parse_response(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split(" ")[1]), headers, body)


async def connect(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection."""
    return await asyncio.wait_for(reader.read(), TIMEOUT)


async def exchange(port: int, request: bytes, *, source: str = "127.0.0.1") -> RawResponse:
    """Send ``request`` on a new connection and read the answer up to the connection's end (send
    ``Connection: close`` for a request the server would otherwise keep alive)."""
    reader, writer = await connect(port, source)
    try:
        writer.write(request)
        await writer.drain()
        return parse_response(await read_to_end(reader))
    finally:
        writer.close()


async def read_one_response(reader: asyncio.StreamReader) -> RawResponse:
    """One response with a ``Content-Length`` on a connection that stays open."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    response = parse_response(head)
    response.body = await asyncio.wait_for(reader.readexactly(int(response.headers["content-length"])), TIMEOUT)
    return response


async def open_many(port: int, count: int, first_bytes: bytes, *, source: str = "127.0.0.1",
                    batch: int = 100) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``count`` connections that each sent ``first_bytes`` (an unfinished request, for a slowloris).
    Opened in batches so the listen backlog never overflows into SYN retries."""
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    while len(connections) < count:
        opened = await asyncio.gather(*(connect(port, source) for _ in range(min(batch, count - len(connections)))))
        for _, writer in opened:
            writer.write(first_bytes)
        connections.extend(opened)
    return connections


def close_all(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in connections:
        writer.close()


def raise_open_file_limit(needed: int) -> tuple[int, int]:
    """Raise the soft limit on open files to at least ``needed`` (within the hard limit); returns the old
    limits, for :func:`resource.setrlimit` afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return soft, hard
