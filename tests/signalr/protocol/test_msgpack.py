"""MessagePack hub protocol: exact array shapes, VarInt framing, .NET error texts, partial frames."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest

from signalr.errors import MessageTooLargeError, ProtocolError, SerializationError
from signalr.protocol import (
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    MessagePackHubProtocol,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
    encode_varint,
    get_protocol,
)

PROTOCOL = MessagePackHubProtocol()


def framed(hex_payload: str) -> bytes:
    payload = bytes.fromhex(hex_payload)
    return encode_varint(len(payload)) + payload


# (case, message, exact frame as hex, length prefix included). Each row is checked in both directions.
GOLDEN = [
    # a result is kind 3 with the value
    ("completion_value", CompletionMessage.with_result("xyz", 42), "09 95 03 80 a3 78 79 7a 03 2a"),
    ("completion_value_nil", CompletionMessage.with_result("0", None), "07 95 03 80 a1 30 03 c0"),
    # error -> kind 1 + string; void -> kind 2 and 4 elements
    ("completion_error", CompletionMessage.with_error("0", "boom"), "0b 95 03 80 a1 30 01 a4 62 6f 6f 6d"),
    ("completion_void", CompletionMessage.empty("0"), "06 94 03 80 a1 30 02"),
    # 6 elements, empty headers 0x80, nil id for fire-and-forget
    (
        "server_call_no_id",
        InvocationMessage(target="ReceiveMessage", arguments=("a", 1)),
        "18 96 01 80 c0 ae 52 65 63 65 69 76 65 4d 65 73 73 61 67 65 92 a1 61 01 90",
    ),
    (
        "invocation_with_stream_ids",
        InvocationMessage(target="Upload", invocation_id="1", stream_ids=("2",)),
        "10 96 01 80 a1 31 a6 55 70 6c 6f 61 64 90 91 a1 32",
    ),
    (
        "stream_invocation",
        StreamInvocationMessage(invocation_id="3", target="Counter", arguments=(10, 500)),
        "13 96 04 80 a1 33 a7 43 6f 75 6e 74 65 72 92 0a cd 01 f4 90",
    ),
    ("stream_item_nil", StreamItemMessage(invocation_id="0", item=None), "06 94 02 80 a1 30 c0"),
    ("stream_item_bytes", StreamItemMessage(invocation_id="0", item=b"\x00\x01"), "09 94 02 80 a1 30 c4 02 00 01"),
    (
        "stream_item_map_with_url",
        StreamItemMessage(invocation_id="0", item={"u": "http://x/y"}),
        "13 94 02 80 a1 30 81 a1 75 aa 68 74 74 70 3a 2f 2f 78 2f 79",
    ),
    ("cancel_invocation", CancelInvocationMessage(invocation_id="3"), "05 93 05 80 a1 33"),
    (
        "cancel_with_headers",
        CancelInvocationMessage(invocation_id="1", headers={"a": "b"}),
        "09 93 05 81 a1 61 a1 62 a1 31",
    ),
    # Ping is a one-element array
    ("ping", PING, "02 91 06"),
    # Close: always 3 elements
    ("close_plain", CloseMessage(), "04 93 07 c0 c2"),
    ("close_error_reconnect", CloseMessage(error="e", allow_reconnect=True), "05 93 07 a1 65 c3"),
    ("close_reconnect", CloseMessage(allow_reconnect=True), "04 93 07 c0 c3"),
    ("ack", AckMessage(sequence_id=5), "03 92 08 05"),
    ("sequence", SequenceMessage(sequence_id=300), "05 92 09 cd 01 2c"),
]
GOLDEN_IDS = [case[0] for case in GOLDEN]


@pytest.mark.parametrize(("case", "message", "frame"), GOLDEN, ids=GOLDEN_IDS)
def test_write_is_byte_exact(case: str, message: HubMessage, frame: str) -> None:
    assert PROTOCOL.write_message(message) == bytes.fromhex(frame)


@pytest.mark.parametrize(("case", "message", "frame"), GOLDEN, ids=GOLDEN_IDS)
def test_parse_golden(case: str, message: HubMessage, frame: str) -> None:
    assert PROTOCOL.parse_messages(bytes.fromhex(frame)) == ([message], b"")


# (case, payload hex without prefix, parsed message)
PARSE_ONLY = [
    # JS sends 5 elements when there are no streams
    (
        "invocation_five_elements",
        "95 01 80 a1 31 a1 78 91 01",
        InvocationMessage(target="x", arguments=(1,), invocation_id="1"),
    ),
    ("invocation_empty_id_is_non_blocking", "96 01 80 a0 a1 78 90 90", InvocationMessage(target="x")),
    (
        "stream_invocation_five_elements",
        "95 04 80 a1 31 a1 78 90",
        StreamInvocationMessage(invocation_id="1", target="x"),
    ),
    ("extra_trailing_elements", "95 05 80 a1 31 01 02", CancelInvocationMessage(invocation_id="1")),
    ("ping_extra_elements", "93 06 01 02", PING),
    ("close_two_elements", "92 07 a3 65 72 72", CloseMessage(error="err")),
    ("close_two_elements_nil", "92 07 c0", CloseMessage()),
    ("ack_uint64_encoding", "92 08 cf 00 00 00 00 00 00 00 05", AckMessage(sequence_id=5)),
    ("completion_error_nil", "95 03 80 a1 31 01 c0", CompletionMessage.empty("1")),
    ("completion_void_extra", "95 03 80 a1 31 02 2a", CompletionMessage.empty("1")),
    ("headers_read", "94 02 81 a1 61 a1 62 a1 31 07", StreamItemMessage(invocation_id="1", item=7, headers={"a": "b"})),
    ("bytes_after_array_ignored", "91 06 c0 c0", PING),
    (
        "timestamp_extension_is_datetime",
        "94 02 80 a1 31 d6 ff 00 00 00 00",
        StreamItemMessage(invocation_id="1", item=datetime(1970, 1, 1, tzinfo=UTC)),
    ),
    ("int_map_keys", "94 02 80 a1 31 81 01 02", StreamItemMessage(invocation_id="1", item={1: 2})),
]


@pytest.mark.parametrize(("case", "payload", "message"), PARSE_ONLY, ids=[c[0] for c in PARSE_ONLY])
def test_parse_lenient_inputs(case: str, payload: str, message: HubMessage) -> None:
    assert PROTOCOL.parse_messages(framed(payload)) == ([message], b"")


# (case, payload hex without prefix, exact ProtocolError text) - .NET's MessagePackHubProtocolWorker texts.
MALFORMED = [
    ("not_msgpack", "c1", "Error reading MessagePack data."),
    ("truncated_array", "93 01 80", "Error reading MessagePack data."),
    ("invalid_utf8", "94 02 80 a1 ff 01", "Error reading MessagePack data."),
    ("empty_payload", "", "Error reading MessagePack data."),
    ("nesting_bomb", "91" * 30_000 + "06", "Error reading MessagePack data."),
    ("array32_claims_4g_elements", "dd ff ff ff ff", "Error reading MessagePack data."),
    ("map32_claims_4g_entries", "df ff ff ff ff", "Error reading MessagePack data."),
    ("bin32_claims_4gb", "c6 ff ff ff ff", "Error reading MessagePack data."),
    ("not_an_array", "01", "Reading array length for 'message' failed."),
    ("empty_array", "90", "Reading 'messageType' as Int32 failed."),
    ("type_string", "91 a1 31", "Reading 'messageType' as Int32 failed."),
    ("type_bool", "91 c3", "Reading 'messageType' as Int32 failed."),
    ("headers_not_map", "96 01 90 a1 31 a1 78 90 90", "Reading map length for 'headers' failed."),
    ("header_key_int", "93 05 81 01 a1 62 a1 31", "Reading 'headers[0].Key' as String failed."),
    ("header_value_int", "93 05 81 a1 61 01 a1 31", "Reading 'headers[0].Value' as String failed."),
    ("header_value_empty", "93 05 81 a1 61 a0 a1 31", "Null or empty value in header."),
    ("header_key_empty", "93 05 81 a0 a1 62 a1 31", "Null or empty key in header."),
    ("invocation_id_int", "96 01 80 01 a1 78 90 90", "Reading 'invocationId' as String failed."),
    ("invocation_target_nil", "96 01 80 c0 c0 90 90", "Null or empty target for Invocation message."),
    ("invocation_target_missing", "93 01 80 c0", "Reading 'target' as String failed."),
    ("invocation_arguments_map", "96 01 80 c0 a1 78 80 90", "Reading array length for 'arguments' failed."),
    ("invocation_arguments_missing", "94 01 80 c0 a1 78", "Reading array length for 'arguments' failed."),
    ("invocation_stream_ids_map", "96 01 80 c0 a1 78 90 80", "Reading array length for 'streamIds' failed."),
    ("invocation_stream_id_empty", "96 01 80 c0 a1 78 90 91 a0", "Null or empty value in streamIds received."),
    ("invocation_stream_id_int", "96 01 80 c0 a1 78 90 91 01", "Reading 'streamIds' as String failed."),
    (
        "stream_invocation_nil_id",
        "96 04 80 c0 a1 78 90 90",
        "Null or empty invocation ID for StreamInvocation message.",
    ),
    ("stream_invocation_empty_target", "96 04 80 a1 31 a0 90 90", "Null or empty target for StreamInvocation message."),
    ("stream_item_nil_id", "94 02 80 c0 01", "Null or empty invocation ID for StreamItem message."),
    ("stream_item_missing_item", "93 02 80 a1 31", "Deserializing object for 'item' failed."),
    ("completion_empty_id", "94 03 80 a0 02", "Null or empty invocation ID for Completion message."),
    ("completion_bad_kind", "94 03 80 a1 31 04", "Invalid invocation result kind."),
    ("completion_kind_string", "94 03 80 a1 31 a1 31", "Reading 'resultKind' as Int32 failed."),
    ("completion_value_missing", "94 03 80 a1 31 03", "Deserializing object for 'argument' failed."),
    ("completion_error_int", "95 03 80 a1 31 01 01", "Reading 'error' as String failed."),
    ("cancel_nil_id", "93 05 80 c0", "Null or empty invocation ID for CancelInvocation message."),
    ("close_allow_reconnect_int", "93 07 c0 01", "Reading 'allowReconnect' as Boolean failed."),
    ("close_error_int", "93 07 01 c2", "Reading 'error' as String failed."),
    ("close_missing_error", "91 07", "Reading 'error' as String failed."),
    ("ack_missing_sequence_id", "91 08", "Reading 'sequenceId' as Int64 failed."),
    ("ack_sequence_id_uint64_max", "92 08 cf ff ff ff ff ff ff ff ff", "Reading 'sequenceId' as Int64 failed."),
    ("sequence_string", "92 09 a1 31", "Reading 'sequenceId' as Int64 failed."),
]


@pytest.mark.parametrize(("case", "payload", "text"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_message_exact_error(case: str, payload: str, text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        PROTOCOL.parse_messages(framed(payload))
    assert str(info.value) == text


def test_varint_over_2gb_is_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        PROTOCOL.parse_messages(b"\xff\xff\xff\xff\x08\x91\x06")
    assert str(info.value) == "Messages over 2GB in size are not supported."


def test_unknown_message_types_are_skipped() -> None:
    data = framed("92 2a 01") + framed("91 00") + bytes.fromhex("02 91 06") + framed("93 05 80 a1 31")
    assert PROTOCOL.parse_messages(data) == ([PING, CancelInvocationMessage(invocation_id="1")], b"")


ALL_GOLDEN_BYTES = b"".join(bytes.fromhex(frame) for _, _, frame in GOLDEN)
ALL_GOLDEN_MESSAGES = [message for _, message, _ in GOLDEN]


def test_multi_message_frame() -> None:
    # several messages in one frame, each behind its own length prefix
    assert PROTOCOL.parse_messages(ALL_GOLDEN_BYTES) == (ALL_GOLDEN_MESSAGES, b"")


def test_split_at_every_byte_offset() -> None:
    data = ALL_GOLDEN_BYTES
    for cut in range(len(data) + 1):
        first, rest = PROTOCOL.parse_messages(data[:cut])
        second, tail = PROTOCOL.parse_messages(rest + data[cut:])
        assert first + second == ALL_GOLDEN_MESSAGES, cut
        assert tail == b""


def test_large_message_round_trip_with_multi_byte_varint() -> None:
    # A 20 KB message needs a 3-byte prefix and must survive any split.
    message = InvocationMessage(target="Big", arguments=("x" * 20_000, b"\x01" * 300), invocation_id="7")
    frame = PROTOCOL.write_message(message)
    assert frame[0] & 0x80 and frame[1] & 0x80 and not frame[2] & 0x80
    for cut in (1, 2, 3, 100, len(frame) - 1):
        first, rest = PROTOCOL.parse_messages(frame[:cut])
        assert first == []
        assert PROTOCOL.parse_messages(rest + frame[cut:]) == ([message], b"")


def test_max_message_size_rejects_from_prefix() -> None:
    limited = get_protocol("messagepack", max_message_size=1024)
    assert limited is not None
    frame = PROTOCOL.write_message(InvocationMessage(target="x", arguments=("y" * 2000,)))
    with pytest.raises(MessageTooLargeError) as info:
        limited.parse_messages(frame[:3])  # only the prefix and one byte have arrived
    assert str(info.value) == (
        "The maximum message size of 1024B was exceeded. The message size can be configured in AddHubOptions."
    )
    assert limited.parse_messages(frame, max_message_size=len(frame))[0] != []


def test_output_matches_independent_msgpack_decoding() -> None:
    # The writer's arrays, decoded by the msgpack library itself, have the documented shapes.
    frame = PROTOCOL.write_message(InvocationMessage(target="T", arguments=(1,), invocation_id="5", headers={"h": "v"}))
    assert msgpack.unpackb(frame[1:]) == [1, {"h": "v"}, "5", "T", [1], []]


def test_naive_datetime_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        PROTOCOL.write_message(StreamItemMessage(invocation_id="1", item=datetime(2020, 1, 1)))
    with pytest.raises(SerializationError):
        PROTOCOL.write_message(StreamItemMessage(invocation_id="1", item=object()))


def test_aware_datetime_uses_timestamp_extension() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    frame = PROTOCOL.write_message(StreamItemMessage(invocation_id="1", item=when))
    assert b"\xd6\xff" in frame
    assert PROTOCOL.parse_messages(frame) == ([StreamItemMessage(invocation_id="1", item=when)], b"")


def test_protocol_identity() -> None:
    protocol = get_protocol("messagepack")
    assert isinstance(protocol, MessagePackHubProtocol)
    assert (protocol.name, protocol.version, protocol.transfer_format) == ("messagepack", 2, TransferFormat.BINARY)
    assert protocol.is_version_supported(1) and not protocol.is_version_supported(3)


# --- cross-checks against the Python clients' own protocol code (no network) ----------------------
# The same checks as in test_json.py, on purpose: the two protocols are twins, and so are what the
# clients send in each (the cases differ where the clients do).

CLIENT_SENT = [
    # (case, pysignalr message factory, what our parser must produce)
    (
        "invocation",
        lambda m: m.InvocationMessage(invocation_id="1", target="Send", arguments=["a", 1]),
        InvocationMessage(target="Send", arguments=("a", 1), invocation_id="1"),
    ),
    (
        "non_blocking_upload",
        lambda m: m.InvocationClientStreamMessage(stream_ids=["s1"], target="Up", arguments=[]),
        InvocationMessage(target="Up", stream_ids=("s1",)),
    ),
    (
        "stream_invocation",
        lambda m: m.StreamInvocationMessage(invocation_id="2", target="Counter", arguments=[3]),
        StreamInvocationMessage(invocation_id="2", target="Counter", arguments=(3,)),
    ),
    (
        "stream_item",
        lambda m: m.StreamItemMessage(invocation_id="s1", item={"x": 1}),
        StreamItemMessage(invocation_id="s1", item={"x": 1}),
    ),
    (
        "client_result",
        lambda m: m.CompletionMessage(invocation_id="s7", result=5),
        CompletionMessage.with_result("s7", 5),
    ),
    (
        "client_result_error",
        lambda m: m.CompletionMessage(invocation_id="s7", error="boom"),
        CompletionMessage.with_error("s7", "boom"),
    ),
    ("upload_end", lambda m: m.CompletionClientStreamMessage(invocation_id="s1"), CompletionMessage.empty("s1")),
    ("cancel", lambda m: m.CancelInvocationMessage(invocation_id="2"), CancelInvocationMessage(invocation_id="2")),
    ("ping", lambda m: m.PingMessage(), PING),
]


@pytest.mark.parametrize(("case", "factory", "expected"), CLIENT_SENT, ids=[c[0] for c in CLIENT_SENT])
def test_parses_what_pysignalr_sends(case: str, factory: Any, expected: HubMessage) -> None:
    from pysignalr import messages
    from pysignalr.protocol.messagepack import MessagepackProtocol

    wire = MessagepackProtocol().encode(factory(messages))
    assert PROTOCOL.parse_messages(wire) == ([expected], b"")


def test_pysignalr_close_is_rejected_like_dotnet() -> None:
    # pysignalr packs its Close as [7, {}] (headers where .NET expects the error string); .NET rejects it too.
    from pysignalr import messages
    from pysignalr.protocol.messagepack import MessagepackProtocol

    with pytest.raises(ProtocolError, match=r"^Reading 'error' as String failed\.$"):
        PROTOCOL.parse_messages(MessagepackProtocol().encode(messages.CloseMessage()))


CLIENT_DECODABLE = [case for case in GOLDEN if not isinstance(case[1], (AckMessage, SequenceMessage))]


@pytest.mark.parametrize(("case", "message", "frame"), CLIENT_DECODABLE, ids=[c[0] for c in CLIENT_DECODABLE])
def test_python_clients_decode_our_output(case: str, message: HubMessage, frame: str) -> None:
    # signalrcore indexes element 5 of every Invocation, so all 6 must be there.
    from pysignalr.protocol.messagepack import MessagepackProtocol
    from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol as SignalrcoreMsgpack

    data = PROTOCOL.write_message(message)
    (decoded,) = MessagepackProtocol().decode(data)
    (decoded_core,) = SignalrcoreMsgpack().parse_messages(data)
    for client_message in (decoded, decoded_core):
        for attribute in ("invocation_id", "target", "item", "error", "allow_reconnect"):
            if hasattr(message, attribute) and hasattr(client_message, attribute):
                assert getattr(client_message, attribute) == getattr(message, attribute), attribute
        if isinstance(message, CompletionMessage) and message.has_result:
            assert client_message.result == message.result


def test_default_limit_is_dotnet_32_kib_and_can_be_disabled() -> None:
    # MaximumReceiveMessageSize defaults to 32 KiB.
    frame = PROTOCOL.write_message(StreamItemMessage(invocation_id="1", item=b"\x00" * 32_768))
    default = get_protocol("messagepack")
    assert default is not None and default.max_message_size == 32_768
    with pytest.raises(MessageTooLargeError, match="^The maximum message size of 32768B was exceeded"):
        default.parse_messages(frame)
    unlimited = MessagePackHubProtocol(max_message_size=None)
    assert unlimited.parse_messages(frame) == ([StreamItemMessage(invocation_id="1", item=b"\x00" * 32_768)], b"")
