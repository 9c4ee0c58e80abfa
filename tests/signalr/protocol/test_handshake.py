"""Handshake request parsing, protocol selection and response encoding (signalr.protocol.handshake)."""

from __future__ import annotations

import pytest

from signalr.errors import HandshakeError
from signalr.protocol import (
    HANDSHAKE_CANCELED,
    HANDSHAKE_UNEXPECTED_ERROR,
    HandshakeRequest,
    JsonHubProtocol,
    MessagePackHubProtocol,
    TransferFormat,
    parse_handshake_request,
    select_protocol,
    write_handshake_response,
)

# (case, request bytes, parsed request, bytes left after the handshake record)
GOOD_REQUESTS = [
    ("json_v1", b'{"protocol":"json","version":1}\x1e', HandshakeRequest(protocol="json", version=1), b""),
    ("json_v2_stateful", b'{"protocol":"json","version":2}\x1e', HandshakeRequest(protocol="json", version=2), b""),
    (
        "messagepack",
        b'{"protocol":"messagepack","version":1}\x1e',
        HandshakeRequest(protocol="messagepack", version=1),
        b"",
    ),
    (
        "reordered_with_unknown_property",
        b'{"version":1,"minorVersion":3,"protocol":"json"}\x1e',
        HandshakeRequest(protocol="json", version=1),
        b"",
    ),
    (
        "whitespace",
        b' { "protocol" : "json" , "version" : 1 } \x1e',
        HandshakeRequest(protocol="json", version=1),
        b"",
    ),
    # Hub messages in the same unit as the handshake are handed back untouched.
    (
        "followed_by_hub_messages",
        b'{"protocol":"json","version":1}\x1e{"type":6}\x1e{"type":1,',
        HandshakeRequest(protocol="json", version=1),
        b'{"type":6}\x1e{"type":1,',
    ),
    (
        "followed_by_binary_frame",
        b'{"protocol":"messagepack","version":1}\x1e\x02\x91\x06',
        HandshakeRequest(protocol="messagepack", version=1),
        b"\x02\x91\x06",
    ),
]


@pytest.mark.parametrize(("case", "data", "request_", "rest"), GOOD_REQUESTS, ids=[c[0] for c in GOOD_REQUESTS])
def test_parse_handshake_request(case: str, data: bytes, request_: HandshakeRequest, rest: bytes) -> None:
    # the request is the first record; what follows it is handed back untouched
    assert parse_handshake_request(data) == (request_, rest)


def test_incomplete_request_at_every_split_waits_for_more() -> None:
    data = b'{"protocol":"json","version":1}\x1e'
    for cut in range(len(data)):
        assert parse_handshake_request(data[:cut]) == (None, data[:cut])


# Every malformed request gets the same client-visible text; the reason is in .detail.
MALFORMED = [
    ("not_json", b"hello\x1e", "Error reading JSON."),
    ("empty_record", b"\x1e", "Error reading JSON."),
    ("array", b"[1]\x1e", "Expected a JSON Object."),
    ("missing_protocol", b'{"version":1}\x1e', "Missing required property 'protocol'."),
    ("null_protocol", b'{"protocol":null,"version":1}\x1e', "Missing required property 'protocol'."),
    ("missing_version", b'{"protocol":"json"}\x1e', "Missing required property 'version'."),
    ("protocol_not_string", b'{"protocol":1,"version":1}\x1e', "Expected 'protocol' to be of type String."),
    ("version_string", b'{"protocol":"json","version":"1"}\x1e', "Expected 'version' to be of type Number."),
    ("version_bool", b'{"protocol":"json","version":true}\x1e', "Expected 'version' to be of type Number."),
    ("version_float", b'{"protocol":"json","version":1.5}\x1e', "Expected 'version' to be a 32-bit integer."),
    ("version_huge", b'{"protocol":"json","version":4294967296}\x1e', "Expected 'version' to be a 32-bit integer."),
    ("invalid_utf8", b'{"protocol":"\xff","version":1}\x1e', "Error reading JSON."),
]


@pytest.mark.parametrize(("case", "data", "detail"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_request(case: str, data: bytes, detail: str) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_handshake_request(data)
    assert str(info.value) == "An unexpected error occurred during connection handshake."
    assert str(info.value) == HANDSHAKE_UNEXPECTED_ERROR
    assert info.value.detail is not None and detail in info.value.detail


def test_oversized_request_is_canceled_before_it_completes() -> None:
    assert HANDSHAKE_CANCELED == "Handshake was canceled."
    with pytest.raises(HandshakeError, match=r"^Handshake was canceled\.$"):
        parse_handshake_request(b'{"protocol":"json",' + b" " * 100, max_message_size=64)
    with pytest.raises(HandshakeError, match=r"^Handshake was canceled\.$"):
        parse_handshake_request(b'{"protocol":"json",' + b" " * 100 + b'"version":1}\x1e', max_message_size=64)
    assert parse_handshake_request(b'{"protocol":"json","version":1}\x1e', max_message_size=33)[0] is not None


# (case, response argument, exact bytes)
RESPONSES = [
    ("success", None, b"{}\x1e"),
    ("unknown_protocol", "The protocol 'x' is not supported.", b'{"error":"The protocol \'x\' is not supported."}\x1e'),
    ("canceled", "Handshake was canceled.", b'{"error":"Handshake was canceled."}\x1e'),
    ("escapes_quotes_keeps_slashes", 'a "b" c/d', b'{"error":"a \\"b\\" c/d"}\x1e'),
    ("non_ascii_verbatim", "é", '{"error":"é"}\x1e'.encode()),
    ("lone_surrogate_replaced", "p\ud800", b'{"error":"p?"}\x1e'),
]


@pytest.mark.parametrize(("case", "error", "expected"), RESPONSES, ids=[c[0] for c in RESPONSES])
def test_write_handshake_response(case: str, error: str | None, expected: bytes) -> None:
    # Success is exactly {} RS and never carries a "type" key.
    assert write_handshake_response(error) == expected
    assert b'"type"' not in write_handshake_response(error)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (HandshakeRequest(protocol="json", version=1), JsonHubProtocol),
        (HandshakeRequest(protocol="json", version=2), JsonHubProtocol),  # version 2: the one that allows stateful reconnect
        (HandshakeRequest(protocol="json", version=0), JsonHubProtocol),
        (HandshakeRequest(protocol="messagepack", version=1), MessagePackHubProtocol),
    ],
)
def test_select_protocol_accepts(request_: HandshakeRequest, expected: type) -> None:
    assert isinstance(select_protocol(request_), expected)


SELECT_ERRORS = [
    # a protocol the server does not know
    ("unknown_protocol", HandshakeRequest(protocol="x", version=1), None, "The protocol 'x' is not supported."),
    # a version the server does not support
    (
        "version_99",
        HandshakeRequest(protocol="json", version=99),
        None,
        "The server does not support version 99 of the 'json' protocol.",
    ),
    # MessagePack over SSE (a Text-only transport)
    (
        "binary_on_text_transport",
        HandshakeRequest(protocol="messagepack", version=1),
        (TransferFormat.TEXT,),
        "Cannot use the 'messagepack' protocol on the current transport. "
        "The transport does not support 'Binary' transfer format.",
    ),
]


@pytest.mark.parametrize(("case", "request_", "formats", "text"), SELECT_ERRORS, ids=[c[0] for c in SELECT_ERRORS])
def test_select_protocol_errors(
    case: str, request_: HandshakeRequest, formats: tuple[TransferFormat, ...] | None, text: str
) -> None:
    kwargs = {} if formats is None else {"transfer_formats": formats}
    with pytest.raises(HandshakeError) as info:
        select_protocol(request_, **kwargs)
    assert str(info.value) == text


def test_select_protocol_honours_enabled_protocol_map() -> None:
    json_only = {"json": JsonHubProtocol()}
    with pytest.raises(HandshakeError, match="The protocol 'messagepack' is not supported."):
        select_protocol(HandshakeRequest(protocol="messagepack", version=1), protocols=json_only)
    assert select_protocol(HandshakeRequest(protocol="json", version=1), protocols=json_only) is json_only["json"]


def test_text_frame_str_is_accepted() -> None:
    assert parse_handshake_request('{"protocol":"json","version":1}\x1e{"type":6}\x1e') == (
        HandshakeRequest(protocol="json", version=1),
        b'{"type":6}\x1e',
    )


def test_default_handshake_limit_is_32_kib() -> None:
    padded = b'{"protocol":"json","version":1,"pad":"' + b"x" * 40_000 + b'"}\x1e'
    with pytest.raises(HandshakeError, match=r"^Handshake was canceled\.$"):
        parse_handshake_request(padded)
    assert parse_handshake_request(padded, max_message_size=None)[0] == HandshakeRequest(protocol="json", version=1)
