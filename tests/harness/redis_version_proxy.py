"""A TCP proxy in front of a real ``redis-server`` that reports another version in ``INFO``.

No Redis older than 7.0 is installed here, so an "old Redis" is the real one seen through this proxy: every
byte passes unchanged except the ``redis_version`` line of an ``INFO`` reply (a RESP2 bulk or RESP3 verbatim
string, whose length header is rewritten to match). ``version = None`` passes everything as it is (Redis upgraded).
"""

from __future__ import annotations

import asyncio
import contextlib
import re

_VERSION_LINE = re.compile(rb"redis_version:[^\r\n]*")


class VersionProxy:
    """Listens on ``port`` (127.0.0.1) and forwards to the Redis on ``target_port``."""

    def __init__(self, port: int, target_port: int, version: str | None) -> None:
        self.port = port
        self.target_port = target_port
        self.version = version
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):  # ends both pipes of every connection
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_writer)
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            self._writers.discard(client_writer)
            self._tasks.discard(task)
            return
        self._writers.add(server_writer)
        try:
            await asyncio.gather(self._pipe(client_reader, server_writer, rewrite=False),
                                 self._pipe(server_reader, client_writer, rewrite=True))
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
                self._writers.discard(writer)
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, rewrite: bool) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            while True:
                if rewrite and self.version is not None:
                    head = await reader.readuntil(b"\r\n")
                    writer.write(await self._reply(head, reader))
                else:
                    data = await reader.read(65536)
                    if not data:
                        break
                    writer.write(data)
                await writer.drain()
        writer.close()

    async def _reply(self, head: bytes, reader: asyncio.StreamReader) -> bytes:
        """One reply line; a whole bulk or verbatim (RESP3) string when ``head`` starts one, its version
        line rewritten."""
        if head[:1] not in (b"$", b"=") or head[1:2] == b"-":
            return head  # a simple reply, a null, or an aggregate's header: passed on line by line
        body = await reader.readexactly(int(head[1:-2]) + 2)
        if self.version is None:  # switched off while this reply was on its way
            return head + body
        text = _VERSION_LINE.sub(b"redis_version:" + self.version.encode(), body[:-2])
        return head[:1] + b"%d\r\n%s\r\n" % (len(text), text)
