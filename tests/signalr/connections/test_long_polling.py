"""Long Polling transport with POST sends and DELETE."""

from __future__ import annotations

import asyncio

from examples.chat import ChatHub
from tests.harness.signalr_server import RS, frame, parse, running, wait_until

HANDSHAKE = ('{"protocol":"json","version":1}' + RS).encode()


async def _start(h) -> str:  # type: ignore[no-untyped-def]
    token = (await h.negotiate())["connectionToken"]
    first = await h.fetch(f"?id={token}&_=1")
    # The first poll answers at once with an empty 200 and no-cache headers.
    assert first.code == 200 and first.body == b""
    assert first.headers["Content-Length"] == "0"
    assert first.headers["Content-Type"] == "application/octet-stream"
    assert "no-cache" in first.headers["Cache-Control"] and first.headers["Pragma"] == "no-cache"
    assert first.headers["Expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert (await h.fetch(f"?id={token}", method="POST", body=HANDSHAKE)).code == 200
    return token


async def test_the_handshake_then_buffered_messages_in_one_poll() -> None:
    async with running() as h:
        token = await _start(h)
        poll = await h.fetch(f"?id={token}")
        assert poll.code == 200 and poll.body == b"{}" + RS.encode()
        body = frame(*({"type": 1, "invocationId": str(i), "target": "Echo", "arguments": [i]} for i in range(3)))
        assert (await h.fetch(f"?id={token}", method="POST", body=body.encode())).code == 200
        received: list[dict] = []
        while len(received) < 3:
            poll = await h.fetch(f"?id={token}")
            assert poll.code == 200 and poll.headers["Content-Type"] == "application/octet-stream"
            received += parse(poll.body)
        assert [m["result"] for m in received] == [0, 1, 2]


async def test_an_idle_poll_returns_an_empty_200() -> None:
    async with running(long_poll_timeout=0.2) as h:
        token = await _start(h)
        assert (await h.fetch(f"?id={token}")).body == b"{}" + RS.encode()
        idle = await h.fetch(f"?id={token}")
        assert idle.code == 200 and idle.body == b""


async def test_a_newer_poll_supersedes_the_outstanding_one() -> None:
    async with running() as h:
        token = await _start(h)
        assert (await h.fetch(f"?id={token}")).code == 200  # handshake response
        old = asyncio.ensure_future(h.fetch(f"?id={token}"))
        connection = h.server.connections.get(token)
        await wait_until(lambda: connection.abort_transport is not None)  # the old poll is attached
        new = asyncio.ensure_future(h.fetch(f"?id={token}"))
        assert (await old).code == 204
        await h.fetch(
            f"?id={token}",
            method="POST",
            body=frame({"type": 1, "invocationId": "x", "target": "Echo", "arguments": [1]}).encode(),
        )
        assert parse((await new).body) == [{"type": 3, "invocationId": "x", "result": 1}]


async def test_a_server_close_gives_204_then_404() -> None:
    async with running() as h:
        token = await _start(h)
        await h.fetch(f"?id={token}")
        await h.fetch(f"?id={token}", method="POST", body=b"{broken" + RS.encode())
        closing = await h.fetch(f"?id={token}")
        assert parse(closing.body)[-1]["type"] == 7
        assert (await h.fetch(f"?id={token}")).code == 204
        assert (await h.fetch(f"?id={token}")).code == 404


async def test_delete_is_202_and_ends_the_outstanding_poll() -> None:
    disconnected = asyncio.Event()

    class Hub(ChatHub):
        async def on_disconnected(self, exception: BaseException | None) -> None:
            disconnected.set()

    async with running(Hub) as h:
        token = await _start(h)
        await h.fetch(f"?id={token}")
        outstanding = asyncio.ensure_future(h.fetch(f"?id={token}"))
        connection = h.server.connections.get(token)
        await wait_until(lambda: connection.abort_transport is not None)
        deleted = await h.fetch(f"?id={token}", method="DELETE")
        assert deleted.code == 202 and deleted.body == b""
        assert (await outstanding).code == 204
        await asyncio.wait_for(disconnected.wait(), 5)
        assert (await h.fetch(f"?id={token}", method="DELETE")).code == 404
        assert (await h.fetch("", method="DELETE")).code == 400


async def test_a_client_that_stops_polling_is_reaped() -> None:
    disconnected = asyncio.Event()

    class Hub(ChatHub):
        async def on_disconnected(self, exception: BaseException | None) -> None:
            disconnected.set()

    async with running(Hub, disconnect_timeout=0.3, heartbeat_interval=0.05) as h:
        token = await _start(h)
        await asyncio.wait_for(disconnected.wait(), 5)
        assert (await h.fetch(f"?id={token}")).code == 404


async def test_no_pings_on_long_polling() -> None:
    async with running(keep_alive_interval=0.05, heartbeat_interval=0.02, long_poll_timeout=0.3) as h:
        token = await _start(h)
        assert (await h.fetch(f"?id={token}")).body == b"{}" + RS.encode()
        await h.fetch(f"?id={token}", method="POST", body=frame({"type": 6}).encode())
        # Several heartbeats pass during this poll, and the client's Ping starts no timeout.
        idle = await h.fetch(f"?id={token}")
        assert idle.code == 200 and idle.body == b""


async def test_msgpack_over_long_polling_is_binary_body() -> None:
    import msgpack

    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        await h.fetch(f"?id={token}")
        await h.fetch(f"?id={token}", method="POST", body=('{"protocol":"messagepack","version":1}' + RS).encode())
        assert (await h.fetch(f"?id={token}")).body == b"{}" + RS.encode()
        payload = msgpack.packb([1, {}, "1", "Echo", [b"\x00\x01"], []])
        await h.fetch(f"?id={token}", method="POST", body=bytes([len(payload)]) + payload)
        body = (await h.fetch(f"?id={token}")).body
        assert msgpack.unpackb(body[1:]) == [3, {}, "1", 3, b"\x00\x01"]
