"""Negotiate: version selection and payloads (pure), then over real HTTP."""

from __future__ import annotations

import json
import re

import pytest

from signalr.connections.negotiate import (
    NegotiateResult,
    NegotiateVersionError,
    advertised_transports,
    negotiate_payload,
    parse_bool_query,
    select_version,
)
from signalr.options import ALL_TRANSPORTS, HttpTransportType
from tests.harness.signalr_server import JsonWs, running

URL_SAFE_22 = re.compile(r"^[A-Za-z0-9_-]{22}$")
ALL_TRANSPORTS_JSON = [
    {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
    {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
    {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
]


@pytest.mark.parametrize(("raw", "expected"), [(None, 0), ("0", 0), ("1", 1), ("5", 1), (" 1 ", 1)])
def test_select_version(raw: str | None, expected: int) -> None:
    assert select_version(raw) == expected


def test_select_version_errors() -> None:
    with pytest.raises(NegotiateVersionError, match="^The client requested a non-integer protocol version.$"):
        select_version("abc")
    with pytest.raises(
        NegotiateVersionError,
        match=r"^The client requested version '0', but the server does not support this version.$",
    ):
        select_version("0", min_version=1)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("True", True), ("1", False), (None, False)])
def test_parse_bool_query(raw: str | None, expected: bool) -> None:
    assert parse_bool_query(raw) is expected


def test_payload_v1_and_v0_exact() -> None:
    v1 = NegotiateResult(
        version=1, connection_id="cid", connection_token="tok", transports=ALL_TRANSPORTS, use_stateful_reconnect=False
    )
    assert negotiate_payload(v1) == (
        b'{"negotiateVersion":1,"connectionId":"cid","connectionToken":"tok","availableTransports":'
        + json.dumps(ALL_TRANSPORTS_JSON, separators=(",", ":")).encode()
        + b"}"
    )
    v0 = NegotiateResult(
        version=0,
        connection_id="cid",
        connection_token="cid",
        transports=(HttpTransportType.LONG_POLLING,),
        use_stateful_reconnect=False,
    )
    body = json.loads(negotiate_payload(v0))
    assert body == {
        "negotiateVersion": 0,
        "connectionId": "cid",
        "availableTransports": [{"transport": "LongPolling", "transferFormats": ["Text", "Binary"]}],
    }
    stateful = NegotiateResult(
        version=1, connection_id="c", connection_token="t", transports=ALL_TRANSPORTS, use_stateful_reconnect=True
    )
    assert json.loads(negotiate_payload(stateful))["useStatefulReconnect"] is True


def test_advertised_transports_keeps_order_and_can_drop_websockets() -> None:
    assert advertised_transports(ALL_TRANSPORTS, websockets_available=False) == (
        HttpTransportType.SERVER_SENT_EVENTS,
        HttpTransportType.LONG_POLLING,
    )


async def test_negotiate_version_1_payload() -> None:
    async with running() as h:
        response = await h.fetch("/negotiate?negotiateVersion=1", method="POST")
        assert response.code == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert int(response.headers["Content-Length"]) == len(response.body)
        body = json.loads(response.body)
        assert body["negotiateVersion"] == 1
        assert URL_SAFE_22.match(body["connectionId"]) and URL_SAFE_22.match(body["connectionToken"])
        assert body["connectionId"] != body["connectionToken"]
        assert body["availableTransports"] == ALL_TRANSPORTS_JSON
        assert "useStatefulReconnect" not in body


async def test_negotiate_version_0_id_works_as_the_token() -> None:
    async with running() as h:
        body = await h.negotiate("")
        assert body["negotiateVersion"] == 0 and "connectionToken" not in body
        client = await JsonWs.connect(h, f"?id={body['connectionId']}")
        assert (await client.invoke("GetConnectionId"))["result"] == body["connectionId"]
        client.close()


async def test_a_version_1_connection_id_is_not_accepted_as_a_token() -> None:
    async with running() as h:
        body = await h.negotiate()
        response = await h.fetch(f"?id={body['connectionId']}")
        assert response.code == 404


async def test_a_higher_version_is_clamped_and_a_non_integer_one_refused() -> None:
    async with running() as h:
        assert (await h.negotiate("?negotiateVersion=5"))["negotiateVersion"] == 1
        response = await h.fetch("/negotiate?negotiateVersion=abc", method="POST")
        assert response.code == 200
        assert json.loads(response.body) == {"error": "The client requested a non-integer protocol version."}


async def test_get_and_put_on_negotiate_are_405() -> None:
    async with running() as h:
        assert (await h.fetch("/negotiate")).code == 405
        assert (await h.fetch("/negotiate", method="PUT", body=b"")).code == 405


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain;charset=UTF-8"])
async def test_a_zero_length_body_with_any_content_type(content_type: str | None) -> None:
    async with running() as h:
        headers = {"Content-Type": content_type} if content_type else {}
        response = await h.fetch("/negotiate?negotiateVersion=1", method="POST", headers=headers)
        assert response.code == 200 and "connectionId" in json.loads(response.body)


async def test_extra_query_parameters_are_ignored_and_keys_case_insensitive() -> None:
    async with running() as h:
        body = await h.negotiate("?hub=x&_=1&NEGOTIATEVERSION=1")
        assert body["negotiateVersion"] == 1


async def test_disabled_transports_are_omitted() -> None:
    async with running(transports=(HttpTransportType.WEBSOCKETS, HttpTransportType.LONG_POLLING)) as h:
        names = [t["transport"] for t in (await h.negotiate())["availableTransports"]]
        assert names == ["WebSockets", "LongPolling"]


async def test_stateful_reconnect_only_when_asked_and_allowed() -> None:
    async with running(allow_stateful_reconnects=True) as h:
        assert (await h.negotiate("?negotiateVersion=1&useStatefulReconnect=true"))["useStatefulReconnect"] is True
        assert "useStatefulReconnect" not in await h.negotiate("?negotiateVersion=1")
    async with running() as h:
        assert "useStatefulReconnect" not in await h.negotiate("?negotiateVersion=1&useStatefulReconnect=true")


async def test_cors_preflight_and_credentials() -> None:
    origin = "http://app.example"
    async with running(allowed_origins=(origin,)) as h:
        for path in ("/negotiate", ""):
            response = await h.fetch(
                path,
                method="OPTIONS",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "x-signalr-user-agent, x-requested-with, authorization",
                },
            )
            assert response.code == 204
            assert response.headers["Access-Control-Allow-Origin"] == origin
            assert response.headers["Access-Control-Allow-Credentials"] == "true"
            assert "Origin" in response.headers["Vary"]
            allowed = response.headers["Access-Control-Allow-Headers"].lower()
            for header in ("x-signalr-user-agent", "x-requested-with", "authorization"):
                assert header in allowed
            methods = response.headers["Access-Control-Allow-Methods"]
            assert all(m in methods for m in ("GET", "POST", "DELETE"))
        negotiate = await h.fetch("/negotiate?negotiateVersion=1", method="POST", headers={"Origin": origin})
        assert negotiate.headers["Access-Control-Allow-Origin"] == origin
        assert negotiate.headers["Access-Control-Allow-Credentials"] == "true"
        # Error responses carry CORS too, so the browser can read the status.
        missing = await h.fetch("?id=nope", headers={"Origin": origin})
        assert missing.code == 404 and missing.headers["Access-Control-Allow-Origin"] == origin
        stranger = await h.fetch("/negotiate", method="POST", headers={"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in stranger.headers


def test_hub_options_validation() -> None:
    from signalr import HubOptions

    assert HubOptions().maximum_receive_message_size == 32768
    with pytest.raises(ValueError, match="keep_alive_interval"):
        HubOptions(keep_alive_interval=0)
    with pytest.raises(ValueError):
        HubOptions(transports=())


PREFIXED_22 = re.compile(r"^3\.[A-Za-z0-9_-]{22}$")


async def test_connection_id_prefix_starts_every_id_and_token() -> None:
    # What lets a front process route each request of a connection to the worker holding it.
    async with running(connection_id_prefix="3.") as h:
        v1 = await h.negotiate()
        assert PREFIXED_22.match(v1["connectionId"]) and PREFIXED_22.match(v1["connectionToken"])
        client = await JsonWs.connect(h, f"?id={v1['connectionToken']}")
        assert (await client.invoke("GetConnectionId"))["result"] == v1["connectionId"]
        client.close()
        # Version 0 clients send the id itself as id=, so it carries the prefix too.
        v0 = await h.negotiate("")
        assert PREFIXED_22.match(v0["connectionId"])
        # A skip-negotiation WebSocket's connection is born with it as well.
        skipped = await JsonWs.connect(h, "?connectionId=whatever")
        assert PREFIXED_22.match((await skipped.invoke("GetConnectionId"))["result"])
        skipped.close()


def test_connection_id_prefix_must_be_url_safe() -> None:
    from signalr import HubOptions

    assert HubOptions().connection_id_prefix == ""
    assert HubOptions(connection_id_prefix="worker-3_a.~").connection_id_prefix == "worker-3_a.~"
    for bad in ("3/", "a b", "é", "3&x=", None):
        with pytest.raises(ValueError, match=r"^HubOptions.connection_id_prefix may hold only letters"):
            HubOptions(connection_id_prefix=bad)  # type: ignore[arg-type]
