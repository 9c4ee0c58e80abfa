"""What the session hub tests share: a minimal JSON-protocol SignalR client that records every invocation
it receives, so a test sees exactly what went over the wire (waits are on messages, with timeouts); quick
hub timers; and a stack filled to its cap with requests waiting behind."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import tornado.httpclient
import tornado.websocket

from gateway.live.hub import HubTuning
from signalr import HubOptions
from tests.harness.stack import Stack, conversation_id_of

RS = "\x1e"
TIMEOUT = 10.0

# Quick timers; the short keep-alive also lets signalrcore's blocking receive thread stop promptly.
FAST = HubTuning(position_interval=0.2, poll_interval=0.2, reap_interval=0.1, heartbeat_interval=0.2,
                 hub_options=HubOptions(keep_alive_interval=0.5))


async def fill_and_queue(stack: Stack, waiting: int) -> tuple[list[str], list[str]]:
    """Admit sessions up to the cap (2), then queue ``waiting`` requests; returns conv ids and request ids."""
    conversations = []
    for _ in range(2):
        response = await stack.request_session()
        assert response.code == 200, response.body
        conversations.append(conversation_id_of(json.loads(response.body)["webSocketUrl"]))
    queued = []
    for i in range(waiting):
        response = await stack.request_session()
        assert response.code == 202, response.body
        body = json.loads(response.body)
        assert body["queuePosition"] == i + 1
        queued.append(body["uniqueRequestId"])
    return conversations, queued


class HubClient:
    """A JSON-protocol SignalR client that records every invocation it receives."""

    def __init__(self, ws: tornado.websocket.WebSocketClientConnection) -> None:
        self.ws = ws
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.completions: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = 0
        self.token = ""
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, base_url: str) -> HubClient:
        http = tornado.httpclient.AsyncHTTPClient()
        negotiated = await http.fetch(f"{base_url}/sessionHub/negotiate?negotiateVersion=1", method="POST", body=b"")
        token = json.loads(negotiated.body)["connectionToken"]
        ws_url = base_url.replace("http://", "ws://") + f"/sessionHub?id={token}"
        ws = await tornado.websocket.websocket_connect(ws_url)
        await ws.write_message(json.dumps({"protocol": "json", "version": 1}) + RS)
        client = cls(ws)
        client.token = token
        return client

    async def _read(self) -> None:
        buffer = ""
        while True:
            data = await self.ws.read_message()
            if data is None:
                self.closed.set()
                return
            buffer += data if isinstance(data, str) else data.decode()
            *frames, buffer = buffer.split(RS)
            for frame in frames:
                message = json.loads(frame)
                kind = message.get("type")
                if kind == 1:
                    self.events.put_nowait((message["target"], message["arguments"][0]))
                elif kind == 3:
                    waiter = self._waiters.pop(message["invocationId"], None)
                    if waiter is not None:
                        waiter.set_result(message)

    async def invoke(self, target: str, *args: Any) -> dict[str, Any]:
        self._ids += 1
        invocation_id = str(self._ids)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[invocation_id] = waiter
        await self.ws.write_message(json.dumps({"type": 1, "invocationId": invocation_id, "target": target,
                                                "arguments": list(args)}) + RS)
        return await asyncio.wait_for(waiter, TIMEOUT)

    async def register(self, request_id: str) -> Any:
        reply = await self.invoke("Register", request_id)
        assert "error" not in reply, reply
        return reply["result"]

    def received(self, target: str) -> list[Any]:
        """Payloads of ``target`` received so far and not yet taken by :meth:`next_event`."""
        return [payload for name, payload in list(self.events._queue) if name == target]  # type: ignore[attr-defined]

    async def next_event(self, target: str | None = None, timeout: float = TIMEOUT) -> tuple[str, Any]:
        while True:
            name, payload = await asyncio.wait_for(self.events.get(), timeout)
            if target is None or name == target:
                return name, payload

    async def position(self, expected: int) -> dict[str, Any]:
        """Wait for the QueuePositionUpdated that announces ``expected``."""
        while True:
            _, payload = await self.next_event("QueuePositionUpdated")
            if payload["queuePosition"] == expected:
                return payload

    def kill(self) -> None:
        """Drop the socket without a close frame (a network failure)."""
        self.ws.stream.close()  # type: ignore[union-attr]

    async def close(self) -> None:
        self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
