"""The status codes of the hub's HTTP endpoints (negotiate, WebSockets, SSE, long polling, POST, DELETE):
one test per rule, with the exact bodies ASP.NET Core SignalR answers where clients read them."""

from __future__ import annotations

import pytest
import tornado.httpclient

from signalr.options import HttpTransportType
from tests.harness.signalr_server import JsonWs, RawSse, running


async def test_negotiate_answers_other_methods_with_405() -> None:
    async with running() as h:
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            kwargs = {"body": b""} if method in ("PUT", "PATCH") else {}
            assert (await h.fetch("/negotiate", method=method, **kwargs)).code == 405, method


async def test_hub_other_methods_405() -> None:
    async with running() as h:
        assert (await h.fetch("?id=x", method="PUT", body=b"")).code == 405
        assert (await h.fetch("?id=x", method="PATCH", body=b"")).code == 405


async def test_a_websocket_for_an_unknown_id_is_404_before_the_upgrade() -> None:
    async with running() as h:
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await h.websocket("?id=unknown")
        assert caught.value.code == 404


async def test_a_second_websocket_is_409_and_a_poll_on_a_websocket_connection_400() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        client = await JsonWs.connect(h, f"?id={token}")
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await h.websocket(f"?id={token}")
        assert caught.value.code == 409
        poll = await h.fetch(f"?id={token}")
        assert poll.code == 400 and poll.body == b"Cannot change transports mid-connection"
        client.close()


async def test_a_websocket_after_long_polling_is_400() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        assert (await h.fetch(f"?id={token}")).code == 200
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await h.websocket(f"?id={token}")
        assert caught.value.code == 400


async def test_post_is_405_and_delete_400_on_a_websocket_connection() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        client = await JsonWs.connect(h, f"?id={token}")
        post = await h.fetch(f"?id={token}", method="POST", body=b"x")
        assert post.code == 405 and post.body == b"POST requests are not allowed for WebSocket connections."
        delete = await h.fetch(f"?id={token}", method="DELETE")
        assert delete.code == 400 and delete.body == b"Cannot terminate this connection using the DELETE endpoint."
        assert (await client.invoke("Echo", "unharmed"))["result"] == "unharmed"
        client.close()


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_a_missing_id_is_400_and_an_unknown_id_404(method: str) -> None:
    async with running() as h:
        kwargs = {"body": b"x"} if method == "POST" else {}
        missing = await h.fetch("", method=method, **kwargs)
        assert missing.code == 400 and missing.body == b"Connection ID required"
        unknown = await h.fetch("?id=nope", method=method, **kwargs)
        assert unknown.code == 404 and unknown.body == b"No Connection with that ID"


async def test_an_sse_stream_without_an_id_is_400_and_with_an_unknown_id_404() -> None:
    async with running() as h:
        for query, status in (("", 400), ("?id=nope", 404)):
            sse = await RawSse.open(h, query)
            assert sse.status == status
            await sse.close()


async def test_a_second_sse_stream_is_409() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        first = await RawSse.open(h, f"?id={token}")
        second = await RawSse.open(h, f"?id={token}")
        assert first.status == 200 and second.status == 409
        await second.close()
        await first.close()


async def test_delete_is_400_for_sse_and_202_for_long_polling() -> None:
    async with running() as h:
        token = (await h.negotiate())["connectionToken"]
        sse = await RawSse.open(h, f"?id={token}")
        assert (await h.fetch(f"?id={token}", method="DELETE")).code == 400
        await sse.close()
        token = (await h.negotiate())["connectionToken"]
        await h.fetch(f"?id={token}")
        assert (await h.fetch(f"?id={token}", method="DELETE")).code == 202
        assert (await h.fetch(f"?id={token}")).code == 404


async def test_disabled_transports_answer_404() -> None:
    async with running(transports=(HttpTransportType.LONG_POLLING,)) as h:
        token = (await h.negotiate())["connectionToken"]
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await h.websocket(f"?id={token}")
        assert caught.value.code == 404
        sse = await RawSse.open(h, f"?id={token}")
        assert sse.status == 404
        await sse.close()
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await h.websocket("")  # skip negotiation needs WebSockets too
        assert caught.value.code == 404
    async with running(transports=(HttpTransportType.WEBSOCKETS,)) as h:
        token = (await h.negotiate())["connectionToken"]
        assert (await h.fetch(f"?id={token}")).code == 404


async def test_the_access_token_comes_from_the_query_or_the_authorization_header() -> None:
    seen: list[str | None] = []

    def user_provider(request) -> str | None:  # type: ignore[no-untyped-def]
        seen.append(request.access_token)
        return request.access_token

    async with running(user_provider=user_provider) as h:
        negotiate = await h.fetch(
            "/negotiate?negotiateVersion=1", method="POST", headers={"Authorization": "Bearer hdr"}
        )
        assert negotiate.code == 200
        token = (await h.negotiate())["connectionToken"]
        client = await JsonWs.connect(h, f"?id={token}&access_token=q%20t")
        client.close()
        assert seen[0] == "hdr" and "q t" in seen
