"""Frame boundaries for the two hub protocols, independent of message contents.

* Text (JSON): every message ends with the record separator ``0x1E``. JSON text can never contain a raw
  ``0x1E`` (control characters must be escaped inside strings and are not whitespace), so splitting on it is
  unambiguous.
* Binary (MessagePack): every message is preceded by its length as a VarInt - 7 bits per byte, least
  significant group first, high bit set when another byte follows, at most 5 bytes, at most 2**31 - 1.

Splitters return the complete payloads plus the unconsumed tail so the caller can keep the tail until
more bytes arrive. ``max_message_size`` bounds one whole frame (separator or prefix included) and is checked
as early as possible so an oversized frame is rejected before it is buffered.
"""

from __future__ import annotations

from ..errors import MessageTooLargeError, ProtocolError

__all__ = [
    "RECORD_SEPARATOR",
    "as_bytes",
    "MAX_VARINT_LENGTH",
    "MAX_BINARY_PAYLOAD",
    "split_records",
    "frame_record",
    "encode_varint",
    "decode_varint",
    "split_length_prefixed",
    "frame_length_prefixed",
]

RECORD_SEPARATOR = b"\x1e"
MAX_VARINT_LENGTH = 5
MAX_BINARY_PAYLOAD = 2**31 - 1

_TOO_LARGE_TEXT = "Messages over 2GB in size are not supported."


def as_bytes(buffer: bytes | bytearray | memoryview | str) -> bytes:
    """Normalise received data to ``bytes``.

    Tornado hands WebSocket text frames over as ``str``; they are re-encoded as UTF-8 (lone surrogates kept
    as invalid bytes so the JSON decoder rejects them instead of this function raising).

    :param buffer: received data.
    """
    if isinstance(buffer, str):
        return buffer.encode("utf-8", errors="surrogatepass")
    return bytes(buffer)


def split_records(buffer: bytes | str, *, max_message_size: int | None = None) -> tuple[list[bytes], bytes]:
    """Split ``0x1E``-terminated records off the front of ``buffer``.

    :param buffer: received bytes, possibly ending in a partial record.
    :param max_message_size: longest accepted record including its separator, or ``None`` for no limit.
    :returns: the complete record payloads (without separators) and the leftover partial record.
    :raises MessageTooLargeError: a record, or the pending partial record, exceeds the limit.
    """
    data = as_bytes(buffer)
    records: list[bytes] = []
    start = 0
    while True:
        end = data.find(RECORD_SEPARATOR, start)
        if end < 0:
            break
        if max_message_size is not None and end + 1 - start > max_message_size:
            raise MessageTooLargeError(max_message_size)
        records.append(data[start:end])
        start = end + 1
    rest = data[start:]
    # The tail cannot shrink by waiting, so reject it now rather than buffering ever more bytes.
    if max_message_size is not None and len(rest) >= max_message_size:
        raise MessageTooLargeError(max_message_size)
    return records, rest


def frame_record(payload: bytes) -> bytes:
    """Terminate one text payload with the record separator.

    :param payload: encoded JSON object.
    """
    return payload + RECORD_SEPARATOR


def encode_varint(length: int) -> bytes:
    """Encode a frame length as a SignalR VarInt.

    :param length: payload length, ``0 <= length <= 2**31 - 1``.
    :raises ValueError: the length is out of range.
    """
    if length < 0 or length > MAX_BINARY_PAYLOAD:
        raise ValueError(f"Cannot frame a payload of {length} bytes.")
    out = bytearray()
    while True:
        group = length & 0x7F
        length >>= 7
        if length:
            out.append(group | 0x80)
        else:
            out.append(group)
            return bytes(out)


def decode_varint(buffer: bytes, offset: int = 0) -> tuple[int, int] | None:
    """Decode the VarInt at ``offset``.

    :param buffer: received bytes.
    :param offset: where the VarInt starts.
    :returns: ``(value, prefix_length)``, or ``None`` when the prefix itself is still incomplete.
    :raises ProtocolError: the prefix is longer than 5 bytes or encodes more than ``2**31 - 1``.
    """
    value = 0
    for index in range(MAX_VARINT_LENGTH):
        position = offset + index
        if position >= len(buffer):
            return None
        byte = buffer[position]
        if index == MAX_VARINT_LENGTH - 1 and byte > 0x07:
            raise ProtocolError(_TOO_LARGE_TEXT)
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, index + 1
    raise ProtocolError(_TOO_LARGE_TEXT)  # pragma: no cover - the 5th byte check returns or raises first


def split_length_prefixed(buffer: bytes | str, *, max_message_size: int | None = None) -> tuple[list[bytes], bytes]:
    """Split VarInt length-prefixed payloads off the front of ``buffer``.

    :param buffer: received bytes, possibly ending in a partial frame.
    :param max_message_size: longest accepted frame including its prefix, or ``None`` for no limit.
    :returns: the complete payloads (without prefixes) and the leftover partial frame.
    :raises MessageTooLargeError: a frame exceeds the limit (detected from the prefix alone).
    :raises ProtocolError: a malformed length prefix.
    """
    data = as_bytes(buffer)
    payloads: list[bytes] = []
    start = 0
    while start < len(data):
        decoded = decode_varint(data, start)
        if decoded is None:
            if max_message_size is not None and len(data) - start >= max_message_size:
                raise MessageTooLargeError(max_message_size)
            break
        length, prefix = decoded
        if max_message_size is not None and prefix + length > max_message_size:
            raise MessageTooLargeError(max_message_size)
        end = start + prefix + length
        if end > len(data):
            break
        payloads.append(data[start + prefix : end])
        start = end
    return payloads, data[start:]


def frame_length_prefixed(payload: bytes) -> bytes:
    """Prefix one binary payload with its VarInt length.

    :param payload: encoded MessagePack array.
    """
    return encode_varint(len(payload)) + payload
