"""Property tests: no input makes a parser raise anything but ProtocolError / HandshakeError, and
generated messages survive write -> parse unchanged in both protocols, however the bytes are split."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalr.errors import HandshakeError, ProtocolError
from signalr.protocol import (
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    HubProtocol,
    InvocationMessage,
    JsonHubProtocol,
    MessagePackHubProtocol,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    frame_length_prefixed,
    parse_handshake_request,
)

# No example database: tests must not write into the shared checkout.
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

JSON_PROTOCOL = JsonHubProtocol()
MSGPACK_PROTOCOL = MessagePackHubProtocol()
PROTOCOLS = [JSON_PROTOCOL, MSGPACK_PROTOCOL]

FIELD_NAMES = st.sampled_from(
    [
        "type",
        "invocationId",
        "target",
        "arguments",
        "streamIds",
        "headers",
        "item",
        "result",
        "error",
        "allowReconnect",
        "sequenceId",
        "other",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
# Envelope-shaped objects reach the per-type validation paths far more often than arbitrary values do.
ENVELOPES = st.dictionaries(FIELD_NAMES, JSON_VALUES | st.integers(min_value=-1, max_value=10), max_size=6)
MSGPACK_VALUES = st.recursive(
    SCALARS | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5), children, max_size=4)
    ),
    max_leaves=12,
)
MSGPACK_ENVELOPES = st.tuples(st.integers(min_value=-1, max_value=10), st.lists(MSGPACK_VALUES, max_size=6)).map(
    lambda pair: [pair[0], *pair[1]]
)


def _assert_only_protocol_errors(protocol: HubProtocol, data: bytes) -> None:
    try:
        messages, rest = protocol.parse_messages(data)
    except ProtocolError:
        return
    assert isinstance(messages, list)
    assert data.endswith(rest)


@FUZZ
@given(data=st.binary(max_size=300))
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["json", "messagepack"])
def test_arbitrary_bytes_only_raise_protocol_error(protocol: HubProtocol, data: bytes) -> None:
    _assert_only_protocol_errors(protocol, data)
    _assert_only_protocol_errors(protocol, data + b"\x1e")


@FUZZ
@given(text=st.text(max_size=100))
def test_arbitrary_text_frames_only_raise_protocol_or_handshake_error(text: str) -> None:
    for candidate in (text, text + "\x1e"):
        for protocol in PROTOCOLS:
            with contextlib.suppress(ProtocolError):
                protocol.parse_messages(candidate)
        with contextlib.suppress(HandshakeError):
            parse_handshake_request(candidate)


@FUZZ
@given(value=JSON_VALUES | ENVELOPES)
def test_arbitrary_json_values_only_raise_protocol_error(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
    _assert_only_protocol_errors(JSON_PROTOCOL, text + b"\x1e")


@FUZZ
@given(value=MSGPACK_VALUES | MSGPACK_ENVELOPES)
def test_arbitrary_msgpack_values_only_raise_protocol_error(value: Any) -> None:
    payload = msgpack.packb(value, use_bin_type=True)
    _assert_only_protocol_errors(MSGPACK_PROTOCOL, frame_length_prefixed(payload))


@FUZZ
@given(data=st.binary(max_size=200) | (JSON_VALUES | ENVELOPES).map(lambda v: json.dumps(v).encode()))
def test_handshake_parser_only_raises_handshake_error(data: bytes) -> None:
    for candidate in (data, data + b"\x1e"):
        try:
            request, rest = parse_handshake_request(candidate)
        except HandshakeError as exc:
            assert str(exc) in ("An unexpected error occurred during connection handshake.", "Handshake was canceled.")
            continue
        assert candidate.endswith(rest)
        if request is not None:
            assert isinstance(request.protocol, str) and isinstance(request.version, int)


# --- round trips ---------------------------------------------------------------------------------

IDS = st.text(min_size=1, max_size=6)
PAYLOADS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
HEADERS = st.none() | st.dictionaries(
    st.text(min_size=1, max_size=4), st.text(min_size=1, max_size=4), min_size=1, max_size=2
)
ARGUMENTS = st.lists(PAYLOADS, max_size=3).map(tuple)
STREAM_IDS = st.lists(IDS, max_size=2).map(tuple)

MESSAGES = st.one_of(
    st.builds(
        InvocationMessage,
        target=IDS,
        arguments=ARGUMENTS,
        invocation_id=st.none() | IDS,
        stream_ids=STREAM_IDS,
        headers=HEADERS,
    ),
    st.builds(
        StreamInvocationMessage,
        invocation_id=IDS,
        target=IDS,
        arguments=ARGUMENTS,
        stream_ids=STREAM_IDS,
        headers=HEADERS,
    ),
    st.builds(StreamItemMessage, invocation_id=IDS, item=PAYLOADS, headers=HEADERS),
    st.builds(CompletionMessage.with_result, IDS, PAYLOADS),
    st.builds(CompletionMessage.with_error, IDS, st.text(min_size=1, max_size=8)),
    st.builds(CompletionMessage.empty, IDS),
    st.builds(CancelInvocationMessage, invocation_id=IDS, headers=HEADERS),
    st.just(PING),
    st.builds(CloseMessage, error=st.none() | st.text(max_size=8), allow_reconnect=st.booleans()),
    st.builds(AckMessage, sequence_id=st.integers(min_value=0, max_value=2**63 - 1)),
    st.builds(SequenceMessage, sequence_id=st.integers(min_value=0, max_value=2**63 - 1)),
)


@FUZZ
@given(messages=st.lists(MESSAGES, min_size=1, max_size=4), cut=st.integers(min_value=0))
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=["json", "messagepack"])
def test_round_trip_split_anywhere(protocol: HubProtocol, messages: list[HubMessage], cut: int) -> None:
    data = b"".join(protocol.write_message(message) for message in messages)
    cut %= len(data) + 1
    first, rest = protocol.parse_messages(data[:cut])
    second, tail = protocol.parse_messages(rest + data[cut:])
    assert first + second == messages
    assert tail == b""
