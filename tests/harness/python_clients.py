"""The Python SignalR clients ``signalrcore`` and ``pysignalr`` wrapped for tests: calls that block (signalrcore's
threads and callbacks) or await (pysignalr), each bounded by a timeout.

Used against the example hub (tests/signalr/interop) and against the gateway's ``/sessionHub`` behind
``--processes`` workers (tests/gateway/cli).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any
from unittest import mock

from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol
from signalrcore.hub import base_hub_connection
from signalrcore.hub.handlers import StreamHandler
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from signalrcore.types import HttpTransportType

TIMEOUT = 10.0


class HubCallError(Exception):
    """The server answered an invocation with an error Completion."""


class CoreClient:
    """A signalrcore connection with blocking, timeout-bounded calls."""

    def __init__(self, url: str, transport: str, protocol: str = "json", *, skip_negotiation: bool = False,
                 automatic_reconnect: dict[str, Any] | None = None) -> None:
        options: dict[str, Any] = {"transport": HttpTransportType[transport]}
        if skip_negotiation:
            options["skip_negotiation"] = True
        builder = HubConnectionBuilder().with_url(url, options=options)
        if automatic_reconnect is not None:  # signalrcore's own reconnect settings (it negotiates again)
            builder = builder.with_automatic_reconnect(automatic_reconnect)
        if protocol == "msgpack":
            builder = builder.with_hub_protocol(MessagePackHubProtocol())
        self.hub = builder.build()
        self.messages: queue.Queue[list[Any]] = queue.Queue()
        self._pending: dict[str, Future[Any]] = {}
        self.hub.on("Message", self.messages.put)
        self.hub.on_error(self._on_error)

    def _on_error(self, message: Any) -> None:
        future = self._pending.pop(message.invocation_id, None)
        if future is not None:
            future.set_exception(HubCallError(message.error))

    def start(self) -> None:
        opened = threading.Event()
        self.hub.on_open(opened.set)
        assert self.hub.start() is True
        assert opened.wait(TIMEOUT), "signalrcore did not open"

    def invoke(self, method: str, *args: Any) -> Any:
        future: Future[Any] = Future()
        invocation_id = str(uuid.uuid4())
        self._pending[invocation_id] = future
        self.hub.send(method, list(args), on_invocation=lambda m: future.set_result(m.result),
                      invocation_id=invocation_id)
        return future.result(TIMEOUT)

    def stream(self, method: str, *args: Any) -> list[Any]:
        items: list[Any] = []
        done: Future[None] = Future()
        callbacks = {
            "next": items.append,
            "complete": lambda _: done.set_result(None),
            "error": lambda m: done.set_exception(HubCallError(getattr(m, "error", m))),
        }

        # signalrcore sends the StreamInvocation before it returns the handler to subscribe on, so
        # early items race the subscription; subscribe the handler as it is created instead.
        class SubscribedHandler(StreamHandler):
            def __init__(self, *handler_args: Any) -> None:
                super().__init__(*handler_args)
                self.subscribe(callbacks)

        with mock.patch.object(base_hub_connection, "StreamHandler", SubscribedHandler):
            self.hub.stream(method, list(args))
        done.result(TIMEOUT)
        return items

    def next_message(self) -> list[Any]:
        return self.messages.get(timeout=TIMEOUT)

    def stop(self) -> None:
        client = getattr(self.hub.transport, "_client", None)
        sock = getattr(client, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.hub.stop()
        if sock is not None:
            # stop() returns early when the shutdown already ended the session, leaving the socket open.
            sock.close()
        checker = getattr(self.hub.transport, "connection_checker", None)
        if checker is not None and checker.running:
            checker.stop()


class PyClient:
    """A running pysignalr client with awaitable calls."""

    def __init__(self, url: str, protocol: str, **options: Any) -> None:
        self.client = SignalRClient(url, protocol=MessagepackProtocol() if protocol == "msgpack" else JSONProtocol(),
                                    **options)
        self.messages: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.opened = asyncio.Event()
        self._errors: dict[str, asyncio.Future[Any]] = {}
        self.task: asyncio.Task[None] | None = None

        async def on_message(args: list[Any]) -> None:
            await self.messages.put(args)

        async def on_open() -> None:
            self.opened.set()

        async def on_error(message: CompletionMessage) -> None:
            future = self._errors.pop(message.invocation_id, None)
            if future is not None and not future.done():
                future.set_exception(HubCallError(message.error))

        self.client.on("Message", on_message)
        self.client.on_open(on_open)
        self.client.on_error(on_error)

    async def start(self) -> None:
        self.task = asyncio.create_task(self.client.run())
        opened = asyncio.create_task(self.opened.wait())
        done, _ = await asyncio.wait({opened, self.task}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if opened not in done:
            opened.cancel()
            if self.task in done:
                self.task.result()
            raise AssertionError("pysignalr did not open")

    async def invoke(self, method: str, *args: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def on_completion(message: CompletionMessage) -> None:
            if not future.done():
                future.set_result(message.result)

        before = set(self.client._invocation_handlers)  # the id is generated inside send()
        await self.client.send(method, list(args), on_invocation=on_completion)
        (invocation_id,) = set(self.client._invocation_handlers) - before or {None}
        if invocation_id is not None:
            self._errors[invocation_id] = future
        return await asyncio.wait_for(future, TIMEOUT)

    async def stream(self, method: str, *args: Any) -> list[Any]:
        items: list[Any] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def on_next(item: Any) -> None:
            items.append(item)

        async def on_complete(_: Any) -> None:
            done.set_result(None)

        async def on_error(message: CompletionMessage) -> None:
            done.set_exception(HubCallError(message.error))

        await self.client.stream(method, list(args), on_next=on_next, on_complete=on_complete, on_error=on_error)
        await asyncio.wait_for(done, TIMEOUT)
        return items

    async def stop(self) -> None:
        """pysignalr has no stop(): cancel run(), then finish the socket close the cancel interrupted."""
        websocket = self.client._transport._ws
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if websocket is not None:
            await asyncio.wait_for(websocket.close(), TIMEOUT)


@contextlib.asynccontextmanager
async def py_clients(url: str, protocol: str, count: int = 1) -> AsyncIterator[list[PyClient]]:
    clients = [PyClient(url, protocol) for _ in range(count)]
    try:
        for client in clients:
            await client.start()
        yield clients
    finally:
        for client in clients:
            await client.stop()
