"""The Python SignalR clients ``signalrcore`` and ``pysignalr`` against ``python -m examples.chat``.

Both negotiate with version 0 (``connectionId`` doubles as the token). Client quirks shape the
coverage (see the protocol reference, sections 14.4 and 14.5):

* signalrcore over Long Polling hands over only the first record of each poll response, keeping the rest
  for later polls, so multi-message exchanges (streams, an Invocation plus its Completion) stall until
  more polls happen; only single-reply calls are checked there. Its Long Polling binary client cannot
  be constructed (a wrong ``super()`` call), so MessagePack over Long Polling is not testable with it.
* signalrcore's ``stop()`` closes its socket while its reader thread is still blocked in ``recv()``,
  which on Linux only returns when the server next writes (the 15 s keep-alive Ping); the fixture
  shuts the socket down first, as a well-behaved client would.
* pysignalr is WebSockets-only; it sends upload streams without an invocation id, so the server sends
  nothing back for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from typing import Any
from unittest import mock

import pytest
from pysignalr.client import SignalRClient
from pysignalr.messages import CompletionMessage
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol
from signalrcore.hub import base_hub_connection
from signalrcore.hub.handlers import StreamHandler
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from signalrcore.types import HttpTransportType

from tests.harness.interop import ExampleServer

pytestmark = pytest.mark.interop

TIMEOUT = 10.0
FAIL_TEXT = "An unexpected error occurred invoking 'Fail' on the server. HubException: Fail was called"
ECHO_VALUE = {"text": "h\u00e9llo", "list": [1, 2.5, None, True]}


@pytest.fixture(scope="module")
def example() -> Iterator[ExampleServer]:
    with ExampleServer() as server:
        yield server


# -- signalrcore (threads and callbacks) ----------------------------------------------------------


class HubCallError(Exception):
    """The server answered an invocation with an error Completion."""


class CoreClient:
    """A signalrcore connection with blocking, timeout-bounded calls."""

    def __init__(self, url: str, transport: str, protocol: str) -> None:
        builder = HubConnectionBuilder().with_url(url, options={"transport": HttpTransportType[transport]})
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


FULL_COMBOS = [("web_sockets", "json"), ("server_sent_events", "json"), ("web_sockets", "msgpack")]


@pytest.fixture(scope="module", params=FULL_COMBOS, ids=lambda c: f"{c[0]}-{c[1]}")
def core_pair(request: pytest.FixtureRequest, example: ExampleServer) -> Iterator[tuple[CoreClient, CoreClient]]:
    transport, protocol = request.param
    clients = (CoreClient(example.url, transport, protocol), CoreClient(example.url, transport, protocol))
    try:
        for client in clients:
            client.start()
        yield clients
    finally:
        for client in clients:
            client.stop()


def test_signalrcore_invoke(core_pair: tuple[CoreClient, CoreClient]) -> None:
    client = core_pair[0]
    assert client.invoke("Echo", ECHO_VALUE) == ECHO_VALUE
    assert client.invoke("Add", 2, 3.5) == 5.5
    assert client.invoke("GetConnectionId") == client.hub.transport.connection_id


def test_signalrcore_hub_error(core_pair: tuple[CoreClient, CoreClient]) -> None:
    with pytest.raises(HubCallError) as error:
        core_pair[0].invoke("Fail")
    assert str(error.value) == FAIL_TEXT


def test_signalrcore_server_stream(core_pair: tuple[CoreClient, CoreClient]) -> None:
    assert core_pair[0].stream("Count", 5) == [0, 1, 2, 3, 4]


def test_signalrcore_broadcast_reaches_both(core_pair: tuple[CoreClient, CoreClient]) -> None:
    sender, other = core_pair
    text = f"core-{uuid.uuid4().hex}"
    sender.invoke("Broadcast", text)
    assert sender.next_message() == [text]
    assert other.next_message() == [text]


def test_signalrcore_long_polling_invoke(example: ExampleServer) -> None:
    client = CoreClient(example.url, "long_polling", "json")
    client.start()
    try:
        assert client.invoke("Echo", ECHO_VALUE) == ECHO_VALUE
        assert client.invoke("Add", 2, 3.5) == 5.5
        with pytest.raises(HubCallError) as error:
            client.invoke("Fail")
        assert str(error.value) == FAIL_TEXT
    finally:
        client.stop()


# -- pysignalr (asyncio) --------------------------------------------------------------------------


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


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
async def test_pysignalr_session(example: ExampleServer, protocol: str) -> None:
    async with py_clients(example.url, protocol, count=2) as (one, two):
        assert await one.invoke("Echo", ECHO_VALUE) == ECHO_VALUE
        assert await one.invoke("Add", 2, 3.5) == 5.5
        with pytest.raises(HubCallError) as error:
            await one.invoke("Fail")
        assert str(error.value) == FAIL_TEXT
        assert await one.stream("Count", 5) == [0, 1, 2, 3, 4]

        text = f"py-{protocol}-{uuid.uuid4().hex}"
        await one.invoke("Broadcast", text)
        assert await asyncio.wait_for(one.messages.get(), TIMEOUT) == [text]
        assert await asyncio.wait_for(two.messages.get(), TIMEOUT) == [text]

        # A fire-and-forget upload: the server consumes it and replies nothing; the connection stays usable.
        async with one.client.client_stream("Sum") as upload:
            for value in (1, 2, 3):
                await upload.send(value)
        assert await one.invoke("Echo", "still here") == "still here"


async def test_pysignalr_renegotiates_when_its_connection_id_is_refused(example: ExampleServer) -> None:
    """After a dropped socket pysignalr first retries the old URL (same ``id``). The server must refuse it
    with an HTTP error (404 once the connection is disposed, 409 while it is still being torn down), never
    accept it; pysignalr 1.3.3 then negotiates a new connection (older versions gave up instead)."""
    client = PyClient(example.url, "json", retry_sleep=0.05, retry_multiplier=1.0)
    await client.start()
    try:
        old_id = await client.invoke("GetConnectionId")
        client.opened.clear()
        websocket = client.client._transport._ws
        assert websocket is not None
        websocket.transport.abort()  # an abrupt drop, no close handshake
        await asyncio.wait_for(client.opened.wait(), TIMEOUT)
        new_id = await client.invoke("GetConnectionId")
        assert new_id != old_id
        assert await client.invoke("Echo", "after") == "after"
        refusals = [line for line in example.log().splitlines() if f"GET /chat?id={old_id} " in line]
        assert refusals, example.log()
        assert all(line.startswith(("404 ", "409 ")) for line in refusals), refusals
    finally:
        await client.stop()
