"""The Python SignalR clients ``signalrcore`` and ``pysignalr`` against ``python -m examples.chat``.

Both negotiate with version 0 (``connectionId`` doubles as the token). Client quirks shape the
coverage:

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
import uuid
from collections.abc import Iterator

import pytest

from tests.harness.interop import ExampleServer
from tests.harness.python_clients import TIMEOUT, CoreClient, HubCallError, PyClient, py_clients

pytestmark = pytest.mark.interop

FAIL_TEXT = "An unexpected error occurred invoking 'Fail' on the server. HubException: Fail was called"
ECHO_VALUE = {"text": "h\u00e9llo", "list": [1, 2.5, None, True]}


# -- signalrcore (threads and callbacks) ----------------------------------------------------------

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
