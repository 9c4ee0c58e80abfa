"""What an idle WebSocket hub connection keeps: one task (its hub session) and none of Tornado's objects
for the upgrade request. A crowd of waiting clients is mostly idle connections, so each one's footprint
is multiplied by tens of thousands (``bench/crowd_profile.py`` measures it in bytes)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket

import tornado.http1connection
import tornado.httputil
from tornado.util import _websocket_mask

from tests.harness.signalr_server import RS, TIMEOUT, raw_websocket, read_ws_frame, running, wait_until

CLIENTS = 10


class _Raw:
    """A WebSocket client on a bare asyncio stream: it adds no task and no Tornado object of its own."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, token: str) -> _Raw:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        client = cls(*await raw_websocket(sock, port, token))
        client.send({"protocol": "json", "version": 1})
        assert await client.text() == "{}" + RS
        return client

    def send(self, message: dict[str, object]) -> None:
        payload = (json.dumps(message) + RS).encode()
        mask = os.urandom(4)
        assert len(payload) < 126
        self.writer.write(bytes((0x81, 0x80 | len(payload))) + mask + _websocket_mask(mask, payload))

    async def text(self) -> str:
        opcode, payload = await read_ws_frame(self.reader)
        assert opcode == 0x1, (opcode, payload)
        return payload.decode()

    async def echo(self, value: str) -> object:
        self.send({"type": 1, "invocationId": value, "target": "Echo", "arguments": [value]})
        while True:
            for part in (await self.text()).split(RS)[:-1]:
                message = json.loads(part)
                if message.get("type") == 3:
                    return message["result"]


def _server_connections() -> int:
    gc.collect()  # the request's objects refer to each other: only a collection shows what is held
    return sum(isinstance(o, tornado.http1connection.HTTP1ServerConnection | tornado.http1connection.HTTP1Connection)
               for o in gc.get_objects())


async def test_an_idle_websocket_keeps_one_task_and_no_request_objects() -> None:
    async with running() as h:
        tasks, held = len(asyncio.all_tasks()), _server_connections()
        clients = [await _Raw.open(h.port, await h.token()) for _ in range(CLIENTS)]
        try:
            await wait_until(lambda: len(h.server.sessions) == CLIENTS)
            assert [await c.echo(f"e{i}") for i, c in enumerate(clients)] == [f"e{i}" for i in range(CLIENTS)]
            # The hub session of each; no reader, no writer, no request handling task waits on it.
            assert len(asyncio.all_tasks()) - tasks == CLIENTS
            # The negotiates' connections are gone, and the upgrades' were let go of.
            assert _server_connections() - held == 0
            handlers = [o for o in gc.get_objects() if type(o).__name__ == "HubHandler"]
            assert len(handlers) == CLIENTS and all(not hd.request.headers for hd in handlers)
            # Still a working connection: a message out and in after the release, and a clean close.
            server_side = {hd.ws_connection for hd in handlers}
            clients[0].writer.write(bytes((0x88, 0x80)) + os.urandom(4))  # a close frame, empty
            opcode, _ = await read_ws_frame(clients[0].reader)
            assert opcode == 0x8
            await wait_until(lambda: len(h.server.sessions) == CLIENTS - 1)
            assert None in {hd.ws_connection for hd in handlers} and len(server_side) == CLIENTS
        finally:
            for client in clients:
                client.writer.close()
        await asyncio.wait_for(wait_until(lambda: not h.server.sessions), TIMEOUT)
