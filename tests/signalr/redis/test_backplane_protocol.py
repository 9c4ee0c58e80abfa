"""The backplane envelope format: round trips, exact bytes, tolerance of unknown fields, clear errors."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from signalr.errors import SignalRError
from signalr.redis.protocol import (
    BackplaneChannels,
    BackplaneProtocolError,
    GroupAck,
    GroupAction,
    GroupCommand,
    InvocationEnvelope,
    decode_ack,
    decode_group_command,
    decode_invocation,
    encode_ack,
    encode_group_command,
    encode_invocation,
)


def test_invocation_wire_layout_is_a_documented_map() -> None:
    envelope = InvocationEnvelope(
        origin="srv1", target="notify", arguments=(1, "two", [3], {"k": None}), exclude=frozenset({"b", "a"})
    )
    assert msgpack.unpackb(encode_invocation(envelope)) == {
        "origin": "srv1",
        "target": "notify",
        "args": [1, "two", [3], {"k": None}],
        "exclude": ["a", "b"],
    }


def test_optional_fields_are_left_out_when_empty() -> None:
    data = encode_invocation(InvocationEnvelope(origin="s", target="t"))
    assert msgpack.unpackb(data) == {"origin": "s", "target": "t", "args": []}


def test_invocation_round_trip_with_groups() -> None:
    envelope = InvocationEnvelope(
        origin="s", target="t", arguments=(1.5, True, None), exclude=frozenset({"x"}), groups=("g1", "g2")
    )
    assert decode_invocation(encode_invocation(envelope)) == envelope


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@given(
    target=st.text(),
    arguments=st.lists(json_values, max_size=5),
    exclude=st.frozensets(st.text(), max_size=3),
    groups=st.lists(st.text(), max_size=3),
)
def test_any_json_able_invocation_round_trips(target, arguments, exclude, groups) -> None:
    envelope = InvocationEnvelope(
        origin="o", target=target, arguments=tuple(arguments), exclude=exclude, groups=tuple(groups)
    )
    assert decode_invocation(encode_invocation(envelope)) == envelope


def test_group_command_and_ack_round_trip_and_layout() -> None:
    command = GroupCommand(id=7, origin="srv", action=GroupAction.REMOVE, group="room", connection_id="c1")
    data = encode_group_command(command)
    assert msgpack.unpackb(data) == {"id": 7, "origin": "srv", "action": 2, "group": "room", "connection": "c1"}
    assert decode_group_command(data) == command
    assert msgpack.unpackb(encode_ack(GroupAck(id=7))) == {"id": 7}
    assert decode_ack(encode_ack(GroupAck(id=7))) == GroupAck(id=7)


def test_readers_ignore_unknown_fields() -> None:
    invocation = msgpack.packb({"origin": "s", "target": "t", "args": [1], "future": {"x": 1}, "v": 9})
    assert decode_invocation(invocation) == InvocationEnvelope(origin="s", target="t", arguments=(1,))
    command = msgpack.packb(
        {"id": 1, "origin": "s", "action": 1, "group": "g", "connection": "c", "trace": "abc"}
    )
    assert decode_group_command(command).action is GroupAction.ADD
    assert decode_ack(msgpack.packb({"id": 3, "from": "srv2"})) == GroupAck(id=3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xc1", "backplane invocation is not valid MessagePack"),
        (msgpack.packb([1, 2]), "backplane invocation must be a MessagePack map, got list"),
        (msgpack.packb({"target": "t", "args": []}), "backplane invocation lacks the required field 'origin'"),
        (msgpack.packb({"origin": "s", "args": []}), "backplane invocation lacks the required field 'target'"),
        (msgpack.packb({"origin": "s", "target": "t"}), "backplane invocation lacks the required field 'args'"),
        (
            msgpack.packb({"origin": 1, "target": "t", "args": []}),
            "backplane invocation field 'origin' has the wrong type int",
        ),
        (
            msgpack.packb({"origin": "s", "target": "t", "args": "abc"}),
            "backplane invocation field 'args' has the wrong type str",
        ),
        (
            msgpack.packb({"origin": "s", "target": "t", "args": [], "exclude": [1]}),
            "backplane invocation field 'exclude' must be a list of strings",
        ),
        (
            msgpack.packb({"origin": "s", "target": "t", "args": [], "groups": "g"}),
            "backplane invocation field 'groups' must be a list of strings",
        ),
    ],
)
def test_malformed_invocations_raise_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(BackplaneProtocolError) as info:
        decode_invocation(data)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            msgpack.packb({"id": 1, "origin": "s", "action": 3, "group": "g", "connection": "c"}),
            "backplane group command has unknown action 3",
        ),
        (
            msgpack.packb({"id": True, "origin": "s", "action": 1, "group": "g", "connection": "c"}),
            "backplane group command field 'id' has the wrong type bool",
        ),
        (
            msgpack.packb({"id": 1, "origin": "s", "action": 1, "group": "g"}),
            "backplane group command lacks the required field 'connection'",
        ),
    ],
)
def test_malformed_group_commands_raise_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(BackplaneProtocolError, match=f"^{message}$"):
        decode_group_command(data)


def test_malformed_ack_raises_clear_error() -> None:
    with pytest.raises(BackplaneProtocolError, match="^backplane group ack lacks the required field 'id'$"):
        decode_ack(msgpack.packb({}))


def test_arguments_that_cannot_cross_processes_fail_on_encode() -> None:
    envelope = InvocationEnvelope(origin="s", target="notify", arguments=(object(),))
    with pytest.raises(BackplaneProtocolError, match="^cannot encode invocation of 'notify' for the backplane"):
        encode_invocation(envelope)


def test_errors_belong_to_the_signalr_hierarchy() -> None:
    assert issubclass(BackplaneProtocolError, SignalRError)
    assert issubclass(BackplaneProtocolError, ValueError)


def test_channel_names() -> None:
    channels = BackplaneChannels(prefix="iqra", hub="voice")
    assert channels.all == "iqra:voice:all"
    assert channels.group("Room:1") == "iqra:voice:group:Room:1"
    assert channels.connection("abc") == "iqra:voice:connection:abc"
    assert channels.internal_groups == "iqra:voice:internal:groups"
    assert channels.ack("host_1f") == "iqra:voice:internal:ack:host_1f"
