"""WebSockets transport and handshake over a real socket."""

from __future__ import annotations

import asyncio
import json

import msgpack
import pytest
import tornado.httpclient
import tornado.websocket

from tests.harness.signalr_server import RS, TIMEOUT, JsonWs, frame, parse, running


async def test_upgrade_with_a_token_then_handshake_and_invoke() -> None:
    async with running() as h:
        client = await JsonWs.connect(h)
        # The handshake response arrived alone in a text frame ending with RS.
        assert client.units == ["{}" + RS]
        assert (await client.invoke("Echo", {"a": [1, None]}))["result"] == {"a": [1, None]}
        client.close()


async def test_an_unknown_id_is_http_404_before_the_upgrade() -> None:
    async with running() as h:
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await h.websocket("?id=doesnotexist")
        assert caught.value.code == 404


async def test_skipping_negotiation_creates_a_connection() -> None:
    async with running() as h:
        # signalrcore appends its own connectionId=; it must be ignored.
        client = await JsonWs.connect(h, "?connectionId=whatever")
        connection_id = (await client.invoke("GetConnectionId"))["result"]
        assert connection_id and connection_id != "whatever"
        client.close()


async def test_a_second_websocket_on_an_active_connection_is_409() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        first = await JsonWs.connect(h, f"?id={token}")
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await h.websocket(f"?id={token}")
        assert caught.value.code == 409
        first.close()


async def test_another_transport_after_a_websocket_is_400() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        client = await JsonWs.connect(h, f"?id={token}")
        assert (await h.fetch(f"?id={token}")).code == 400  # long poll
        sse = await h.fetch(f"?id={token}", headers={"Accept": "text/event-stream"})
        assert sse.code == 400
        client.close()


async def test_a_disallowed_origin_is_403_and_an_allowed_or_absent_origin_works() -> None:
    async with running(allowed_origins=("http://good.example",)) as h:
        token = (await h.negotiate())["connectionToken"]
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await h.websocket(f"?id={token}", headers={"Origin": "http://evil.example"})
        assert caught.value.code == 403
        good = await h.websocket(f"?id={token}", headers={"Origin": "http://good.example"})
        good.close()
        bare = await JsonWs.connect(h)  # no Origin header at all: allowed
        bare.close()


async def test_batched_and_split_messages_and_a_handshake_sharing_a_frame() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        client = JsonWs(await h.websocket(f"?id={token}"))
        # The handshake and an invocation in one frame.
        await client.send_raw(
            '{"protocol":"json","version":1}'
            + RS
            + frame({"type": 1, "invocationId": "a", "target": "Echo", "arguments": [1]})
        )
        assert await client.next() == {}
        assert (await client.next())["result"] == 1
        # Three messages in one frame are all processed, in order.
        await client.send(*({"type": 1, "invocationId": str(i), "target": "Echo", "arguments": [i]} for i in range(3)))
        assert [(await client.next())["invocationId"] for _ in range(3)] == ["0", "1", "2"]
        # One message split across two frames.
        text = frame({"arguments": [7], "target": "Echo", "type": 1, "invocationId": "s"})  # properties in any order
        await client.send_raw(text[:10])
        await client.send_raw(text[10:])
        assert await client.next() == {"type": 3, "invocationId": "s", "result": 7}
        client.close()


@pytest.mark.parametrize(
    ("request_text", "error"),
    [
        ('{"protocol":"nope","version":1}', "The protocol 'nope' is not supported."),
        ('{"protocol":"json","version":99}', "The server does not support version 99 of the 'json' protocol."),
        ('{"protocol":"json"', "An unexpected error occurred during connection handshake."),
        ('{"version":1}', "An unexpected error occurred during connection handshake."),
    ],
)
async def test_a_refused_handshake_answers_its_error_then_closes(request_text: str, error: str) -> None:
    async with running() as h:
        client = await JsonWs.connect(h, handshake=False, query=f"?id={(await h.negotiate())['connectionToken']}")
        await client.send_raw(request_text + RS)
        assert await client.next() == {"error": error}
        assert await client.closed() == []


async def test_handshake_version_2_is_accepted() -> None:
    async with running() as h:
        client = await JsonWs.connect(h, handshake=False, query=f"?id={(await h.negotiate())['connectionToken']}")
        await client.send_raw('{"protocol":"json","version":2}' + RS)
        assert await client.next() == {}
        client.close()


async def test_no_handshake_in_time_is_canceled_and_closed() -> None:
    async with running(handshake_timeout=0.2) as h:
        client = await JsonWs.connect(h, handshake=False, query=f"?id={(await h.negotiate())['connectionToken']}")
        assert await client.next() == {"error": "Handshake was canceled."}
        assert await client.closed() == []


async def test_unknown_message_types_and_extra_properties_are_ignored() -> None:
    async with running() as h:
        client = await JsonWs.connect(h)
        await client.send({"type": 42, "whatever": 1})
        await client.send(
            {"type": 1, "invocationId": "x", "target": "Echo", "arguments": [2], "headers": {"a": "b"}, "extra": True}
        )
        assert await client.next_non_ping() == {"type": 3, "invocationId": "x", "result": 2}
        client.close()


async def test_malformed_json_closes_with_an_error_and_allow_reconnect() -> None:
    async with running() as h:
        client = await JsonWs.connect(h)
        await client.send_raw("{not json" + RS)
        assert await client.next_non_ping() == {
            "type": 7,
            "error": "Connection closed with an error.",
            "allowReconnect": True,
        }
        assert await client.closed() == []
        # The server closed the WebSocket normally.
        assert client.ws.close_code == 1000


async def test_a_message_above_the_maximum_size_closes_the_connection() -> None:
    async with running(maximum_receive_message_size=1024) as h:
        client = await JsonWs.connect(h)
        assert (await client.invoke("Echo", "x" * 900))["result"] == "x" * 900
        await client.send({"type": 1, "invocationId": "big", "target": "Echo", "arguments": ["x" * 2000]})
        message = await client.next_non_ping()
        assert message is not None and message["type"] == 7 and message["error"] == "Connection closed with an error."
        assert await client.closed() == []


async def test_a_client_close_ends_the_connection_without_an_echo() -> None:
    async with running() as h:
        client = await JsonWs.connect(h)
        await client.send({"type": 7})
        assert await client.closed() == []


async def test_messagepack_uses_binary_frames_after_a_text_handshake() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        ws = await h.websocket(f"?id={token}")
        # The JSON handshake for messagepack arrives in a text frame.
        await ws.write_message('{"protocol":"messagepack","version":1}' + RS)
        response = await ws.read_message()
        assert response == b"{}" + RS.encode()  # binary frame (bytes), not text
        payload = msgpack.packb([1, {}, "i1", "Add", [2, 3]])  # 5 elements, as the JS client sends
        await ws.write_message(bytes([len(payload)]) + payload, binary=True)
        unit = await ws.read_message()
        assert isinstance(unit, bytes)
        assert msgpack.unpackb(unit[1:]) == [3, {}, "i1", 3, 5]
        ws.close()


async def test_server_output_has_no_headers_or_empty_fields() -> None:
    async with running() as h:
        client = await JsonWs.connect(h)
        await client.send({"type": 1, "invocationId": "b", "target": "Broadcast", "arguments": ["m"]})
        seen = [await client.next_non_ping(), await client.next_non_ping()]
        assert {"type": 1, "target": "Message", "arguments": ["m"]} in seen
        for unit in client.units:
            for message in parse(unit):
                assert "headers" not in message
                assert message.get("invocationId", "x") not in ("", None)
                assert "error" not in message or message["error"]
        client.close()


async def test_broadcasts_arrive_as_text_frames_of_whole_messages() -> None:
    async with running() as h:
        a = await JsonWs.connect(h)
        b = await JsonWs.connect(h)
        for i in range(20):
            await a.send({"type": 1, "target": "Broadcast", "arguments": [str(i)]})
        received = []
        while len(received) < 20:
            message = await b.next_non_ping()
            assert message is not None
            received.append(message["arguments"][0])
        assert received == [str(i) for i in range(20)]
        assert all(isinstance(u, str) and u.endswith(RS) for u in b.units)
        a.close()
        b.close()


def test_frame_helper_roundtrip() -> None:
    assert parse(frame({"type": 6})) == [{"type": 6}]
    assert json.loads(frame({"a": 1})[:-1]) == {"a": 1}
    assert TIMEOUT > 0
    assert tornado.websocket.WebSocketClosedError


async def test_a_graceful_shutdown_sends_close_with_allow_reconnect() -> None:
    async with running() as h:
        client = await JsonWs.connect(h)
        await h.server.shutdown()
        assert await client.next_non_ping() == {"type": 7, "allowReconnect": True}
        assert await client.closed() == []


async def test_negotiate_during_a_graceful_shutdown_is_503_with_retry_after() -> None:
    """The connection a stopping server made would be closed at once: the client is told to try again
    (through a balancer, another instance answers), not handed a token of a server going away."""
    async with running() as h:
        client = await JsonWs.connect(h)  # a connection keeps the shutdown waiting while we negotiate
        shutdown = asyncio.ensure_future(h.server.shutdown())
        try:
            response = await h.fetch("/negotiate?negotiateVersion=1", method="POST")
            assert response.code == 503
            assert response.headers["Retry-After"] == "1"
            assert b"shutting down" in response.body
        finally:
            await shutdown
        client.close()


async def test_an_abort_by_the_application_sends_close_without_allow_reconnect() -> None:
    from examples.chat import ChatHub

    class Kicker(ChatHub):
        def kick(self) -> None:
            self.context.abort()

    async with running(Kicker) as h:
        client = await JsonWs.connect(h)
        await client.send({"type": 1, "target": "Kick", "arguments": []})
        assert await client.next_non_ping() == {"type": 7}
        assert await client.closed() == []
