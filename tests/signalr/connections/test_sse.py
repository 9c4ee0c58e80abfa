"""Server-Sent Events transport with POST sends."""

from __future__ import annotations

import asyncio
import json

import pytest

from signalr.connections.transports.sse import format_event
from tests.harness.signalr_server import RS, RawSse, frame, parse, running

HANDSHAKE = '{"protocol":"json","version":1}' + RS


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"abc", b"data: abc\r\n\r\n"),
        (b"a\nb", b"data: a\r\ndata: b\r\n\r\n"),
        (b"a\r\nb\n", b"data: a\r\ndata: b\r\n\r\n"),
        (b"", b"data: \r\n\r\n"),
    ],
)
def test_format_event_makes_a_data_field_of_every_line(payload: bytes, expected: bytes) -> None:
    assert format_event(payload) == expected


async def _post(h, token: str, text: str) -> int:  # type: ignore[no-untyped-def]
    return (await h.fetch(f"?id={token}", method="POST", body=text.encode())).code


async def test_sse_stream_headers_handshake_and_invocation() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        sse = await RawSse.open(h, f"?id={token}")
        assert sse.status == 200
        head = sse.head.lower()
        assert "content-type: text/event-stream" in head
        assert "cache-control: no-cache" in head and "pragma: no-cache" in head
        assert "content-encoding: identity" in head
        assert await sse.raw_until(b":\r\n") == b":\r\n"  # flushed before any message
        response = await h.fetch(f"?id={token}", method="POST", body=HANDSHAKE.encode())
        assert response.code == 200 and response.body == b""  # a send is answered with an empty body
        assert await sse.event() == b"{}" + RS.encode()
        await _post(h, token, frame({"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["x\ny"]}))
        data = await sse.event()
        assert parse(data) == [{"type": 3, "invocationId": "1", "result": "x\ny"}]
        # Client Close: the server ends the stream.
        await _post(h, token, frame({"type": 7}))
        assert await sse.at_eof()
        await sse.close()
        # Later requests for the id: 404.
        assert await _post(h, token, frame({"type": 6})) == 404


async def test_a_second_sse_stream_is_409_and_a_missing_or_unknown_id_refused() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        first = await RawSse.open(h, f"?id={token}")
        second = await RawSse.open(h, f"?id={token}")
        assert second.status == 409
        await second.close()
        for query, status in (("", 400), ("?id=unknown", 404)):
            other = await RawSse.open(h, query)
            assert other.status == status
            await other.close()
        await first.close()


async def test_messagepack_over_sse_is_refused() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        sse = await RawSse.open(h, f"?id={token}")
        await _post(h, token, '{"protocol":"messagepack","version":1}' + RS)
        await sse.raw_until(b":\r\n")
        assert json.loads((await sse.event())[:-1]) == {
            "error": "Cannot use the 'messagepack' protocol on the current transport. "
            "The transport does not support 'Binary' transfer format."
        }
        assert await sse.at_eof()
        await sse.close()


async def test_sse_client_disconnect_disposes_connection() -> None:
    disconnected = asyncio.Event()

    from examples.chat import ChatHub

    class Hub(ChatHub):
        async def on_disconnected(self, exception: BaseException | None) -> None:
            disconnected.set()

    async with running(Hub) as h:
        token = (await h.negotiate())["connectionToken"]
        sse = await RawSse.open(h, f"?id={token}")
        await _post(h, token, HANDSHAKE)
        await sse.raw_until(b":\r\n")
        assert await sse.event() == b"{}" + RS.encode()
        await sse.close()
        await asyncio.wait_for(disconnected.wait(), 5)
        assert await _post(h, token, frame({"type": 6})) == 404


async def test_a_post_without_an_id_is_400_and_with_an_unknown_id_404() -> None:
    async with running() as h:
        assert (await h.fetch("", method="POST", body=b"x")).code == 400
        assert (await h.fetch("?id=nope", method="POST", body=b"x")).code == 404
