"""Record-separator and VarInt length-prefix framing (signalr.protocol.framing)."""

from __future__ import annotations

import pytest

from signalr.errors import MessageTooLargeError, ProtocolError
from signalr.protocol.framing import (
    decode_varint,
    encode_varint,
    frame_length_prefixed,
    frame_record,
    split_length_prefixed,
    split_records,
)

# (case, length, VarInt bytes): two worked examples (one byte, two bytes) plus every byte-count boundary.
VARINT_GOLDEN = [
    ("zero", 0, b"\x00"),
    ("example_53", 53, b"\x35"),
    ("one_byte_max", 127, b"\x7f"),
    ("two_bytes_min", 128, b"\x80\x01"),
    ("example_5248", 5248, b"\x80\x29"),
    ("two_bytes_max", 16383, b"\xff\x7f"),
    ("three_bytes_min", 16384, b"\x80\x80\x01"),
    ("four_bytes_min", 2**21, b"\x80\x80\x80\x01"),
    ("five_bytes_min", 2**28, b"\x80\x80\x80\x80\x01"),
    ("max_2gb", 2**31 - 1, b"\xff\xff\xff\xff\x07"),
]


@pytest.mark.parametrize(("case", "length", "encoded"), VARINT_GOLDEN, ids=[c[0] for c in VARINT_GOLDEN])
def test_varint_golden_both_ways(case: str, length: int, encoded: bytes) -> None:
    assert encode_varint(length) == encoded
    assert decode_varint(encoded + b"tail") == (length, len(encoded))


@pytest.mark.parametrize("length", [-1, 2**31])
def test_encode_varint_rejects_out_of_range(length: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(length)


@pytest.mark.parametrize(
    "prefix",
    [b"\xff\xff\xff\xff\x08", b"\xff\xff\xff\xff\x7f", b"\xff\xff\xff\xff\x80", b"\x80\x80\x80\x80\xff\x01"],
    ids=["fifth_byte_8", "fifth_byte_7f", "fifth_byte_continues", "six_bytes"],
)
def test_decode_varint_over_2gb_is_protocol_error(prefix: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"^Messages over 2GB in size are not supported\.$"):
        decode_varint(prefix)


@pytest.mark.parametrize("partial", [b"", b"\x80", b"\xff\xff", b"\xff\xff\xff\xff"])
def test_decode_varint_incomplete_prefix(partial: bytes) -> None:
    assert decode_varint(partial) is None


def test_split_records_batched_and_partial() -> None:
    records, rest = split_records(b'{"a":1}\x1e{"b":2}\x1e{"c"')
    assert records == [b'{"a":1}', b'{"b":2}']
    assert rest == b'{"c"'


def test_split_records_keeps_empty_record_for_the_parser_to_reject() -> None:
    assert split_records(b"\x1e\x1e") == ([b"", b""], b"")


def test_frame_record_appends_separator() -> None:
    assert frame_record(b"{}") == b"{}\x1e"


def test_split_records_size_limit_counts_the_separator() -> None:
    # A 9-byte payload plus its separator is exactly 10 bytes: accepted at 10, rejected at 9.
    assert split_records(b"123456789\x1e", max_message_size=10) == ([b"123456789"], b"")
    with pytest.raises(MessageTooLargeError) as info:
        split_records(b"123456789\x1e", max_message_size=9)
    assert str(info.value) == (
        "The maximum message size of 9B was exceeded. The message size can be configured in AddHubOptions."
    )


def test_split_records_rejects_oversized_tail_before_it_completes() -> None:
    assert split_records(b"123456789", max_message_size=10) == ([], b"123456789")
    with pytest.raises(MessageTooLargeError):
        split_records(b"1234567890", max_message_size=10)


def test_split_length_prefixed_batched_and_partial() -> None:
    data = frame_length_prefixed(b"abc") + frame_length_prefixed(b"x" * 200) + b"\x05ab"
    payloads, rest = split_length_prefixed(data)
    assert payloads == [b"abc", b"x" * 200]
    assert rest == b"\x05ab"


def test_split_length_prefixed_incomplete_prefix_is_left_over() -> None:
    assert split_length_prefixed(b"\x02\x91\x06\x80") == ([b"\x91\x06"], b"\x80")


def test_split_length_prefixed_zero_length_payload() -> None:
    assert split_length_prefixed(b"\x00") == ([b""], b"")


def test_split_length_prefixed_rejects_from_the_prefix_alone() -> None:
    # Only the prefix announcing 1 MiB has arrived; the limit is enforced without waiting for the body.
    with pytest.raises(MessageTooLargeError) as info:
        split_length_prefixed(encode_varint(2**20), max_message_size=32768)
    assert info.value.limit == 32768


def test_split_length_prefixed_limit_includes_prefix() -> None:
    frame = frame_length_prefixed(b"x" * 8)  # 9 bytes on the wire
    assert split_length_prefixed(frame, max_message_size=9) == ([b"x" * 8], b"")
    with pytest.raises(MessageTooLargeError):
        split_length_prefixed(frame, max_message_size=8)


def test_split_length_prefixed_huge_varint_is_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="2GB"):
        split_length_prefixed(b"\xff\xff\xff\xff\x0f" + b"x")
