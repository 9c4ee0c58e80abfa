"""JSON hub protocol: canonical output, parsing, .NET error texts, partial and batched frames."""

from __future__ import annotations

import math
from typing import Any

import pytest
import ujson

from signalr.errors import MessageTooLargeError, ProtocolError, SerializationError
from signalr.protocol import (
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    JsonHubProtocol,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
    get_protocol,
)

PROTOCOL = JsonHubProtocol()

# (case, message, exact record without the trailing RS). Each row is checked in both directions.
GOLDEN = [
    # canonical server output: what .NET writes, byte for byte
    ("completion_value", CompletionMessage.with_result("0", 42), b'{"type":3,"invocationId":"0","result":42}'),
    ("completion_void", CompletionMessage.with_result("0", None), b'{"type":3,"invocationId":"0","result":null}'),
    ("completion_error", CompletionMessage.with_error("0", "boom"), b'{"type":3,"invocationId":"0","error":"boom"}'),
    ("completion_stream_end", CompletionMessage.empty("0"), b'{"type":3,"invocationId":"0"}'),
    (
        "server_call_no_id",
        InvocationMessage(target="ReceiveMessage", arguments=("a", 1)),
        b'{"type":1,"target":"ReceiveMessage","arguments":["a",1]}',
    ),
    (
        "client_result_call",
        InvocationMessage(target="GetMessage", arguments=(), invocation_id="s7"),
        b'{"type":1,"invocationId":"s7","target":"GetMessage","arguments":[]}',
    ),
    (
        "upload_invocation_stream_ids",
        InvocationMessage(target="Upload", arguments=(1,), invocation_id="1", stream_ids=("2", "3")),
        b'{"type":1,"invocationId":"1","target":"Upload","arguments":[1],"streamIds":["2","3"]}',
    ),
    (
        "stream_invocation",
        StreamInvocationMessage(invocation_id="3", target="Counter", arguments=(10, 500)),
        b'{"type":4,"invocationId":"3","target":"Counter","arguments":[10,500]}',
    ),
    (
        "stream_item_object_with_url",
        StreamItemMessage(invocation_id="0", item={"url": "https://iqra.test/a/b?x=1&y=<2>"}),
        b'{"type":2,"invocationId":"0","item":{"url":"https://iqra.test/a/b?x=1&y=<2>"}}',
    ),
    ("stream_item_null", StreamItemMessage(invocation_id="0", item=None), b'{"type":2,"invocationId":"0","item":null}'),
    ("cancel_invocation", CancelInvocationMessage(invocation_id="3"), b'{"type":5,"invocationId":"3"}'),
    ("ping", PING, b'{"type":6}'),
    ("close_plain", CloseMessage(), b'{"type":7}'),
    (
        "close_error",
        CloseMessage(error="Connection closed with an error."),
        b'{"type":7,"error":"Connection closed with an error."}',
    ),
    (
        "close_error_reconnect",
        CloseMessage(error="e", allow_reconnect=True),
        b'{"type":7,"error":"e","allowReconnect":true}',
    ),
    ("close_reconnect", CloseMessage(allow_reconnect=True), b'{"type":7,"allowReconnect":true}'),
    ("ack", AckMessage(sequence_id=5), b'{"type":8,"sequenceId":5}'),
    ("sequence", SequenceMessage(sequence_id=1), b'{"type":9,"sequenceId":1}'),
    ("sequence_int64", SequenceMessage(sequence_id=2**40), b'{"type":9,"sequenceId":1099511627776}'),
    (
        "headers_written_after_type",
        InvocationMessage(target="x", arguments=(), headers={"traceparent": "00-ab-cd-01"}),
        b'{"type":1,"headers":{"traceparent":"00-ab-cd-01"},"target":"x","arguments":[]}',
    ),
    (
        "unicode_and_escaped_separator",
        InvocationMessage(target="Say", arguments=("é€😀", "a\x1eb", 'q"\\')),
        '{"type":1,"target":"Say","arguments":["é€😀","a\\u001eb","q\\"\\\\"]}'.encode(),
    ),
    (
        "nested_payload",
        InvocationMessage(target="T", arguments=({"a": [1, 2.5, True, None], "b": {}}, [])),
        b'{"type":1,"target":"T","arguments":[{"a":[1,2.5,true,null],"b":{}},[]]}',
    ),
]
GOLDEN_IDS = [case[0] for case in GOLDEN]


@pytest.mark.parametrize(("case", "message", "record"), GOLDEN, ids=GOLDEN_IDS)
def test_write_is_byte_exact(case: str, message: HubMessage, record: bytes) -> None:
    assert PROTOCOL.write_message(message) == record + b"\x1e"


@pytest.mark.parametrize(("case", "message", "record"), GOLDEN, ids=GOLDEN_IDS)
def test_parse_golden(case: str, message: HubMessage, record: bytes) -> None:
    assert PROTOCOL.parse_messages(record + b"\x1e") == ([message], b"")


# (case, input record, parsed message): inputs that are not canonical output.
PARSE_ONLY = [
    # properties in any order
    (
        "arguments_before_target",
        b'{"arguments":[1],"target":"x","type":1}',
        InvocationMessage(target="x", arguments=(1,)),
    ),
    # unknown properties are ignored
    (
        "unknown_properties_ignored",
        b'{"type":1,"target":"x","arguments":[],"foo":{"bar":[1]},"invocationIdx":5}',
        InvocationMessage(target="x"),
    ),
    # headers are accepted
    (
        "headers_accepted",
        b'{"type":2,"invocationId":"1","item":3,"headers":{"a":"b","c":""}}',
        StreamItemMessage(invocation_id="1", item=3, headers={"a": "b", "c": ""}),
    ),
    (
        "empty_headers_dropped",
        b'{"type":5,"invocationId":"1","headers":{}}',
        CancelInvocationMessage(invocation_id="1"),
    ),
    # a null error next to a result is no error (signalrcore sends both keys)
    (
        "null_error_with_result",
        b'{"type":3,"invocationId":"1","result":5,"error":null}',
        CompletionMessage.with_result("1", 5),
    ),
    (
        "null_error_only",
        b'{"type":3,"invocationId":"1","error":null}',
        CompletionMessage.empty("1"),
    ),
    (
        "empty_error_kept",
        b'{"type":3,"invocationId":"1","error":""}',
        CompletionMessage(invocation_id="1", error=""),
    ),
    (
        "empty_id_is_non_blocking",
        b'{"type":1,"invocationId":"","target":"x","arguments":[]}',
        InvocationMessage(target="x"),
    ),
    (
        "null_id_is_non_blocking",
        b'{"type":1,"invocationId":null,"target":"x","arguments":[]}',
        InvocationMessage(target="x"),
    ),
    ("close_null_error", b'{"type":7,"error":null,"allowReconnect":false}', CloseMessage()),
    ("close_empty_error", b'{"type":7,"error":""}', CloseMessage(error="")),
    ("ping_with_whitespace", b' \r\n\t{ "type" : 6 } ', PING),
    ("ping_extra_fields", b'{"type":6,"invocationId":"3","target":"x"}', PING),
    ("type_written_last", b'{"invocationId":"9","type":5}', CancelInvocationMessage(invocation_id="9")),
    (
        "escaped_slash_in_input",
        b'{"type":1,"target":"x","arguments":["a\\/b"]}',
        InvocationMessage(target="x", arguments=("a/b",)),
    ),
    ("negative_sequence_id", b'{"type":8,"sequenceId":-1}', AckMessage(sequence_id=-1)),
]


@pytest.mark.parametrize(("case", "record", "message"), PARSE_ONLY, ids=[c[0] for c in PARSE_ONLY])
def test_parse_lenient_inputs(case: str, record: bytes, message: HubMessage) -> None:
    assert PROTOCOL.parse_messages(record + b"\x1e") == ([message], b"")


# (case, input record, exact ProtocolError text) - .NET's JsonHubProtocol texts.
MALFORMED = [
    # a record that is not JSON
    ("not_json", b"not json", "Error reading JSON."),
    ("truncated_object", b'{"type":1', "Error reading JSON."),
    ("empty_record", b"", "Error reading JSON."),
    ("trailing_data", b'{"type":6}x', "Error reading JSON."),
    ("invalid_utf8", b'{"type":1,"target":"\xff","arguments":[]}', "Error reading JSON."),
    ("top_level_array", b"[]", "Unexpected JSON Token Type 'Array'. Expected a JSON Object."),
    ("top_level_string", b'"x"', "Unexpected JSON Token Type 'String'. Expected a JSON Object."),
    ("top_level_number", b"6", "Unexpected JSON Token Type 'Number'. Expected a JSON Object."),
    ("top_level_null", b"null", "Unexpected JSON Token Type 'Null'. Expected a JSON Object."),
    ("top_level_true", b"true", "Unexpected JSON Token Type 'True'. Expected a JSON Object."),
    ("missing_type", b"{}", "Missing required property 'type'."),
    ("null_type", b'{"type":null}', "Expected 'type' to be of type Number."),
    ("string_type", b'{"type":"1"}', "Expected 'type' to be of type Number."),
    ("bool_type", b'{"type":true}', "Expected 'type' to be of type Number."),
    ("float_type", b'{"type":1.5}', "Expected 'type' to be a 32-bit integer."),
    ("huge_type", b'{"type":4294967297}', "Expected 'type' to be a 32-bit integer."),
    ("invocation_missing_target", b'{"type":1,"arguments":[]}', "Missing required property 'target'."),
    ("invocation_empty_target", b'{"type":1,"target":"","arguments":[]}', "Missing required property 'target'."),
    ("invocation_missing_arguments", b'{"type":1,"target":"x"}', "Missing required property 'arguments'."),
    ("invocation_target_number", b'{"type":1,"target":5,"arguments":[]}', "Expected 'target' to be of type String."),
    (
        "invocation_arguments_object",
        b'{"type":1,"target":"x","arguments":{}}',
        "Expected 'arguments' to be of type Array.",
    ),
    (
        "invocation_arguments_null",
        b'{"type":1,"target":"x","arguments":null}',
        "Expected 'arguments' to be of type Array.",
    ),
    (
        "invocation_id_number",
        b'{"type":1,"invocationId":1,"target":"x","arguments":[]}',
        "Expected 'invocationId' to be of type String.",
    ),
    (
        "stream_ids_not_array",
        b'{"type":1,"target":"x","arguments":[],"streamIds":"a"}',
        "Expected 'streamIds' to be of type Array.",
    ),
    (
        "stream_ids_not_strings",
        b'{"type":1,"target":"x","arguments":[],"streamIds":[1]}',
        "Expected every entry of 'streamIds' to be of type String.",
    ),
    (
        "headers_array",
        b'{"type":1,"target":"x","arguments":[],"headers":[]}',
        "Expected 'headers' to be of type StartObject.",
    ),
    (
        "header_value_number",
        b'{"type":1,"target":"x","arguments":[],"headers":{"a":1}}',
        "Expected header 'a' to be of type String.",
    ),
    (
        "stream_invocation_missing_id",
        b'{"type":4,"target":"x","arguments":[]}',
        "Missing required property 'invocationId'.",
    ),
    (
        "stream_invocation_empty_id",
        b'{"type":4,"invocationId":"","target":"x","arguments":[]}',
        "Missing required property 'invocationId'.",
    ),
    (
        "stream_invocation_missing_arguments",
        b'{"type":4,"invocationId":"1","target":"x"}',
        "Missing required property 'arguments'.",
    ),
    (
        "stream_invocation_missing_target",
        b'{"type":4,"invocationId":"1","arguments":[]}',
        "Missing required property 'target'.",
    ),
    ("stream_item_missing_id", b'{"type":2,"item":1}', "Missing required property 'invocationId'."),
    ("stream_item_missing_item", b'{"type":2,"invocationId":"1"}', "Missing required property 'item'."),
    ("completion_missing_id", b'{"type":3,"result":1}', "Missing required property 'invocationId'."),
    # a completion cannot carry both an error and a result
    (
        "completion_error_and_result",
        b'{"type":3,"invocationId":"1","result":1,"error":"e"}',
        "The 'error' and 'result' properties are mutually exclusive.",
    ),
    (
        "completion_empty_error_and_null_result",
        b'{"type":3,"invocationId":"1","error":"","result":null}',
        "The 'error' and 'result' properties are mutually exclusive.",
    ),
    ("completion_error_number", b'{"type":3,"invocationId":"1","error":1}', "Expected 'error' to be of type String."),
    ("cancel_missing_id", b'{"type":5}', "Missing required property 'invocationId'."),
    (
        "close_allow_reconnect_string",
        b'{"type":7,"allowReconnect":"yes"}',
        "Expected 'allowReconnect' to be true or false.",
    ),
    (
        "close_allow_reconnect_null",
        b'{"type":7,"allowReconnect":null}',
        "Expected 'allowReconnect' to be true or false.",
    ),
    ("ack_missing_sequence_id", b'{"type":8}', "Missing required property 'sequenceId'."),
    ("ack_null_sequence_id", b'{"type":8,"sequenceId":null}', "Missing required property 'sequenceId'."),
    ("ack_string_sequence_id", b'{"type":8,"sequenceId":"1"}', "Expected 'sequenceId' to be of type Number."),
    ("ack_float_sequence_id", b'{"type":8,"sequenceId":1.5}', "Expected 'sequenceId' to be a 64-bit integer."),
    ("sequence_missing_sequence_id", b'{"type":9}', "Missing required property 'sequenceId'."),
    ("nesting_bomb", b'{"type":1,"target":"x","arguments":' + b"[" * 5000 + b"]" * 5000 + b"}", "Error reading JSON."),
    # Like .NET, known properties are type-checked while reading, before the type is known.
    ("unknown_type_with_bad_target", b'{"type":42,"target":1}', "Expected 'target' to be of type String."),
]


@pytest.mark.parametrize(("case", "record", "text"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_message_exact_error(case: str, record: bytes, text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        PROTOCOL.parse_messages(record + b"\x1e")
    assert str(info.value) == text


def test_unknown_message_types_are_skipped() -> None:
    # unknown message types are skipped, known ones around them still parsed
    data = b'{"type":42,"x":1}\x1e{"type":6}\x1e{"type":0}\x1e{"type":-1}\x1e{"type":5,"invocationId":"1"}\x1e'
    assert PROTOCOL.parse_messages(data) == ([PING, CancelInvocationMessage(invocation_id="1")], b"")


def test_partial_frame_is_left_over() -> None:
    assert PROTOCOL.parse_messages(b'{"type":6}\x1e{"type":') == ([PING], b'{"type":')
    assert PROTOCOL.parse_messages(b"") == ([], b"")


ALL_GOLDEN_BYTES = b"".join(record + b"\x1e" for _, _, record in GOLDEN)
ALL_GOLDEN_MESSAGES = [message for _, message, _ in GOLDEN]


def test_batched_frame_yields_all_messages_in_order() -> None:
    # several messages in one unit all come out, in order
    assert PROTOCOL.parse_messages(ALL_GOLDEN_BYTES) == (ALL_GOLDEN_MESSAGES, b"")


def test_split_at_every_byte_offset() -> None:
    # Wherever a unit boundary falls, the same messages come out.
    data = ALL_GOLDEN_BYTES
    for cut in range(len(data) + 1):
        first, rest = PROTOCOL.parse_messages(data[:cut])
        second, tail = PROTOCOL.parse_messages(rest + data[cut:])
        assert first + second == ALL_GOLDEN_MESSAGES, cut
        assert tail == b""


def test_byte_by_byte_feed() -> None:
    pending = b""
    received: list[HubMessage] = []
    for byte in ALL_GOLDEN_BYTES:
        messages, pending = PROTOCOL.parse_messages(pending + bytes([byte]))
        received.extend(messages)
    assert received == ALL_GOLDEN_MESSAGES and pending == b""


@pytest.mark.parametrize(("case", "message", "record"), GOLDEN, ids=GOLDEN_IDS)
def test_output_has_no_null_optional_fields(case: str, message: HubMessage, record: bytes) -> None:
    # Only result/item may be null; no headers unless asked; never invocationId "".
    document = ujson.loads(PROTOCOL.write_message(message)[:-1])
    for key, value in document.items():
        assert value is not None or key in ("result", "item"), key
    assert document.get("invocationId", "x") != ""
    if getattr(message, "headers", None) is None:
        assert "headers" not in document


@pytest.mark.parametrize(
    ("message", "record"),
    [
        # empty optional fields are left out, not written as empty or null
        (InvocationMessage(target="x", invocation_id=""), b'{"type":1,"target":"x","arguments":[]}'),
        (InvocationMessage(target="x", headers={}), b'{"type":1,"target":"x","arguments":[]}'),
        (CompletionMessage.with_error("1", ""), b'{"type":3,"invocationId":"1"}'),
        (StreamItemMessage(invocation_id="1", item=(1, 2)), b'{"type":2,"invocationId":"1","item":[1,2]}'),
    ],
)
def test_output_omits_empty_optional_fields(message: HubMessage, record: bytes) -> None:
    assert PROTOCOL.write_message(message) == record + b"\x1e"


@pytest.mark.parametrize("value", [object(), math.nan, math.inf, "\ud800"], ids=["object", "nan", "inf", "surrogate"])
def test_unencodable_payload_raises_serialization_error(value: object) -> None:
    with pytest.raises(SerializationError):
        PROTOCOL.write_message(InvocationMessage(target="x", arguments=(value,)))


def test_max_message_size_attribute_and_override() -> None:
    # MaximumReceiveMessageSize, per protocol instance
    frame = b'{"type":1,"target":"x","arguments":["' + b"a" * 100 + b'"]}\x1e'
    limited = get_protocol("json", max_message_size=64)
    assert limited is not None
    with pytest.raises(MessageTooLargeError) as info:
        limited.parse_messages(frame)
    assert str(info.value) == (
        "The maximum message size of 64B was exceeded. The message size can be configured in AddHubOptions."
    )
    # Rejected as soon as the unterminated tail reaches the limit, without waiting for the separator.
    with pytest.raises(MessageTooLargeError):
        limited.parse_messages(frame[:64])
    assert limited.parse_messages(frame, max_message_size=len(frame))[0][0].target == "x"
    with pytest.raises(MessageTooLargeError):
        PROTOCOL.parse_messages(frame, max_message_size=len(frame) - 1)


def test_protocol_identity() -> None:
    protocol = get_protocol("json")
    assert isinstance(protocol, JsonHubProtocol)
    assert (protocol.name, protocol.version, protocol.transfer_format) == ("json", 2, TransferFormat.TEXT)
    assert protocol.is_version_supported(1) and protocol.is_version_supported(2)
    assert not protocol.is_version_supported(3)
    assert get_protocol("JSON") is not None
    assert get_protocol("xml") is None


def test_text_frame_str_is_accepted() -> None:
    # Tornado delivers WebSocket text frames as str.
    messages, rest = PROTOCOL.parse_messages('{"type":1,"target":"é","arguments":[]}\x1e{"ty')
    assert messages == [InvocationMessage(target="é")]
    assert rest == b'{"ty'


# --- cross-checks against the Python clients' own protocol code (no network) ----------------------
# The same checks as in test_msgpack.py, on purpose: the two protocols are twins, and so are what the
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
        lambda m: m.CompletionMessage(invocation_id="s7", error="Client didn't provide a result."),
        CompletionMessage.with_error("s7", "Client didn't provide a result."),
    ),
    ("upload_end", lambda m: m.CompletionClientStreamMessage(invocation_id="s1"), CompletionMessage.empty("s1")),
    ("cancel", lambda m: m.CancelInvocationMessage(invocation_id="2"), CancelInvocationMessage(invocation_id="2")),
    ("ping", lambda m: m.PingMessage(), PING),
    # pysignalr writes "error": null and an unknown "allow_reconnect" key; both must be tolerated.
    ("close", lambda m: m.CloseMessage(), CloseMessage()),
]


@pytest.mark.parametrize(("case", "factory", "expected"), CLIENT_SENT, ids=[c[0] for c in CLIENT_SENT])
def test_parses_what_pysignalr_sends(case: str, factory: Any, expected: HubMessage) -> None:
    from pysignalr import messages
    from pysignalr.protocol.json import JSONProtocol

    wire = JSONProtocol().encode(factory(messages)).encode()
    assert PROTOCOL.parse_messages(wire) == ([expected], b"")


# Ack/Sequence are only sent after stateful reconnect was negotiated, which these clients never do.
CLIENT_DECODABLE = [case for case in GOLDEN if not isinstance(case[1], (AckMessage, SequenceMessage))]


@pytest.mark.parametrize(("case", "message", "record"), CLIENT_DECODABLE, ids=[c[0] for c in CLIENT_DECODABLE])
def test_python_clients_decode_our_output(case: str, message: HubMessage, record: bytes) -> None:
    from pysignalr.protocol.json import JSONProtocol
    from signalrcore.protocol.json_hub_protocol import JsonHubProtocol as SignalrcoreJson

    frame = PROTOCOL.write_message(message)
    (decoded,) = JSONProtocol().decode(frame)
    (decoded_core,) = SignalrcoreJson().parse_messages(frame.decode())
    for client_message in (decoded, decoded_core):
        for attribute in ("invocation_id", "target", "item", "error"):
            if hasattr(message, attribute) and hasattr(client_message, attribute):
                assert getattr(client_message, attribute) == getattr(message, attribute), attribute
        if isinstance(message, CompletionMessage) and message.has_result:
            assert client_message.result == message.result


def test_default_limit_is_dotnet_32_kib_and_can_be_disabled() -> None:
    # MaximumReceiveMessageSize defaults to 32 KiB, separator included.
    item = "a" * (32_768 - len(b'{"type":2,"invocationId":"1","item":""}\x1e'))
    frame = PROTOCOL.write_message(StreamItemMessage(invocation_id="1", item=item))
    assert len(frame) == 32_768
    assert PROTOCOL.max_message_size == 32_768
    assert PROTOCOL.parse_messages(frame) == ([StreamItemMessage(invocation_id="1", item=item)], b"")
    bigger = PROTOCOL.write_message(StreamItemMessage(invocation_id="1", item=item + "a"))
    with pytest.raises(MessageTooLargeError, match="^The maximum message size of 32768B was exceeded"):
        PROTOCOL.parse_messages(bigger)
    assert JsonHubProtocol(max_message_size=None).parse_messages(bigger)[0] != []
