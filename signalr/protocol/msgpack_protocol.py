"""The MessagePack hub protocol (``"messagepack"``, Binary transfer format).

Each message is a VarInt length prefix followed by one MessagePack array whose shape depends on the type:

* ``[1, headers, invocationId|nil, target, [args], [streamIds]]`` (streamIds optional on input)
* ``[2, headers, invocationId, item]``
* ``[3, headers, invocationId, resultKind, result?]`` - kind 1 error, 2 void, 3 value
* ``[4, headers, invocationId, target, [args], [streamIds]]``
* ``[5, headers, invocationId]``, ``[6]``, ``[7, error|nil, allowReconnect?]``, ``[8, seq]``, ``[9, seq]``

Readers ignore extra trailing elements and unknown types; error texts follow .NET's
``MessagePackHubProtocolWorker``. The writer always emits 6-element invocations and 3-element Close
messages (signalrcore indexes those positions unconditionally).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from ..errors import ProtocolError, SerializationError
from .base import HubProtocol
from .framing import frame_length_prefixed, split_length_prefixed
from .messages import (
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    MessageType,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
)

__all__ = ["MessagePackHubProtocol", "RESULT_KIND_ERROR", "RESULT_KIND_VOID", "RESULT_KIND_VALUE"]

RESULT_KIND_ERROR = 1
RESULT_KIND_VOID = 2
RESULT_KIND_VALUE = 3

_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)
_MISSING = object()


class _Reader:
    """Sequential access to the elements of one message array, with .NET's error texts."""

    __slots__ = ("_items", "_index")

    def __init__(self, items: list[Any]) -> None:
        self._items = items
        self._index = 1  # element 0 (the type) is read by the dispatcher

    def _next(self) -> Any:
        if self._index >= len(self._items):
            return _MISSING
        value = self._items[self._index]
        self._index += 1
        return value

    def has_more(self) -> bool:
        return self._index < len(self._items)

    def string(self, field: str) -> str | None:
        value = self._next()
        if value is None or isinstance(value, str):
            return value
        raise ProtocolError(f"Reading '{field}' as String failed.")

    def required_string(self, field: str, what: str) -> str:
        value = self.string(field)
        if not value:
            raise ProtocolError(f"Null or empty {what}.")
        return value

    def integer(self, field: str, bits: int) -> int:
        value = self._next()
        valid = _INT32 if bits == 32 else _INT64
        if isinstance(value, bool) or not isinstance(value, int) or value not in valid:
            raise ProtocolError(f"Reading '{field}' as Int{bits} failed.")
        return value

    def boolean(self, field: str) -> bool:
        value = self._next()
        if not isinstance(value, bool):
            raise ProtocolError(f"Reading '{field}' as Boolean failed.")
        return value

    def array(self, field: str) -> list[Any]:
        value = self._next()
        if not isinstance(value, list):
            raise ProtocolError(f"Reading array length for '{field}' failed.")
        return value

    def value(self, field: str) -> Any:
        value = self._next()
        if value is _MISSING:
            raise ProtocolError(f"Deserializing object for '{field}' failed.")
        return value

    def headers(self) -> dict[str, str] | None:
        value = self._next()
        if not isinstance(value, dict):
            raise ProtocolError("Reading map length for 'headers' failed.")
        for index, (key, header) in enumerate(value.items()):
            if not isinstance(key, str):
                raise ProtocolError(f"Reading 'headers[{index}].Key' as String failed.")
            if not key:
                raise ProtocolError("Null or empty key in header.")
            if not isinstance(header, str):
                raise ProtocolError(f"Reading 'headers[{index}].Value' as String failed.")
            if not header:
                raise ProtocolError("Null or empty value in header.")
        return value or None

    def stream_ids(self) -> tuple[str, ...]:
        # Older clients (and JS without streams) send 5 elements; the 6th is optional on input.
        if not self.has_more():
            return ()
        ids = self.array("streamIds")
        for stream_id in ids:
            if stream_id is not None and not isinstance(stream_id, str):
                raise ProtocolError("Reading 'streamIds' as String failed.")
            if not stream_id:
                raise ProtocolError("Null or empty value in streamIds received.")
        return tuple(ids)


def _invocation(r: _Reader) -> InvocationMessage:
    headers = r.headers()
    # An empty id is how MessagePack clients spell "non-blocking".
    invocation_id = r.string("invocationId") or None
    target = r.required_string("target", "target for Invocation message")
    arguments = tuple(r.array("arguments"))
    return InvocationMessage(
        target=target,
        arguments=arguments,
        invocation_id=invocation_id,
        stream_ids=r.stream_ids(),
        headers=headers,
    )


def _stream_invocation(r: _Reader) -> StreamInvocationMessage:
    headers = r.headers()
    invocation_id = r.required_string("invocationId", "invocation ID for StreamInvocation message")
    target = r.required_string("target", "target for StreamInvocation message")
    arguments = tuple(r.array("arguments"))
    return StreamInvocationMessage(
        invocation_id=invocation_id,
        target=target,
        arguments=arguments,
        stream_ids=r.stream_ids(),
        headers=headers,
    )


def _stream_item(r: _Reader) -> StreamItemMessage:
    headers = r.headers()
    invocation_id = r.required_string("invocationId", "invocation ID for StreamItem message")
    return StreamItemMessage(invocation_id=invocation_id, item=r.value("item"), headers=headers)


def _completion(r: _Reader) -> CompletionMessage:
    headers = r.headers()
    invocation_id = r.required_string("invocationId", "invocation ID for Completion message")
    kind = r.integer("resultKind", 32)
    if kind == RESULT_KIND_ERROR:
        error = r.string("error")
        return CompletionMessage(invocation_id=invocation_id, error=error, headers=headers)
    if kind == RESULT_KIND_VALUE:
        result = r.value("argument")
        return CompletionMessage(invocation_id=invocation_id, result=result, has_result=True, headers=headers)
    if kind == RESULT_KIND_VOID:
        return CompletionMessage(invocation_id=invocation_id, headers=headers)
    raise ProtocolError("Invalid invocation result kind.")


def _cancel(r: _Reader) -> CancelInvocationMessage:
    headers = r.headers()
    invocation_id = r.required_string("invocationId", "invocation ID for CancelInvocation message")
    return CancelInvocationMessage(invocation_id=invocation_id, headers=headers)


def _close(r: _Reader) -> CloseMessage:
    error = r.string("error")
    allow_reconnect = r.boolean("allowReconnect") if r.has_more() else False
    return CloseMessage(error=error, allow_reconnect=allow_reconnect)


_READERS: dict[int, Callable[[_Reader], HubMessage]] = {
    MessageType.INVOCATION: _invocation,
    MessageType.STREAM_ITEM: _stream_item,
    MessageType.COMPLETION: _completion,
    MessageType.STREAM_INVOCATION: _stream_invocation,
    MessageType.CANCEL_INVOCATION: _cancel,
    MessageType.PING: lambda r: PING,
    MessageType.CLOSE: _close,
    MessageType.ACK: lambda r: AckMessage(sequence_id=r.integer("sequenceId", 64)),
    MessageType.SEQUENCE: lambda r: SequenceMessage(sequence_id=r.integer("sequenceId", 64)),
}


def _unpack(payload: bytes) -> Any:
    try:
        # timestamp=3: the msgpack timestamp extension (.NET DateTime) becomes an aware datetime.
        return msgpack.unpackb(payload, raw=False, strict_map_key=False, timestamp=3)
    except msgpack.ExtraData as extra:
        # .NET reads one array from the frame and ignores whatever follows it.
        return extra.unpacked  # type: ignore[attr-defined]
    except Exception:  # truncated data, invalid UTF-8, unhashable map keys, nesting limits...
        raise ProtocolError("Error reading MessagePack data.") from None


def _parse_payload(payload: bytes) -> HubMessage | None:
    items = _unpack(payload)
    if not isinstance(items, list):
        raise ProtocolError("Reading array length for 'message' failed.")
    if not items:
        raise ProtocolError("Reading 'messageType' as Int32 failed.")
    message_type = items[0]
    if isinstance(message_type, bool) or not isinstance(message_type, int) or message_type not in _INT32:
        raise ProtocolError("Reading 'messageType' as Int32 failed.")
    reader = _READERS.get(message_type)
    # Unknown types are dropped so newer peers can add message types.
    return reader(_Reader(items)) if reader is not None else None


def _headers(message: Any) -> Mapping[str, str]:
    return getattr(message, "headers", None) or {}


def _shape(message: HubMessage) -> list[Any]:
    match message:
        case InvocationMessage():
            return [
                int(MessageType.INVOCATION),
                dict(_headers(message)),
                message.invocation_id or None,
                message.target,
                list(message.arguments),
                list(message.stream_ids),
            ]
        case StreamInvocationMessage():
            return [
                int(MessageType.STREAM_INVOCATION),
                dict(_headers(message)),
                message.invocation_id,
                message.target,
                list(message.arguments),
                list(message.stream_ids),
            ]
        case StreamItemMessage():
            return [int(MessageType.STREAM_ITEM), dict(_headers(message)), message.invocation_id, message.item]
        case CompletionMessage():
            prefix = [int(MessageType.COMPLETION), dict(_headers(message)), message.invocation_id]
            if message.error:
                return [*prefix, RESULT_KIND_ERROR, message.error]
            if message.has_result:
                return [*prefix, RESULT_KIND_VALUE, message.result]
            return [*prefix, RESULT_KIND_VOID]
        case CancelInvocationMessage():
            return [int(MessageType.CANCEL_INVOCATION), dict(_headers(message)), message.invocation_id]
        case PingMessage():
            return [int(MessageType.PING)]
        case CloseMessage():
            return [int(MessageType.CLOSE), message.error, message.allow_reconnect]
        case AckMessage():
            return [int(MessageType.ACK), message.sequence_id]
        case SequenceMessage():
            return [int(MessageType.SEQUENCE), message.sequence_id]
    raise SerializationError(f"Unsupported message type: {type(message).__name__}")


# A deliberate twin of JsonHubProtocol (json_protocol.py): the two encodings answer the same questions
# in the same order (framing, per-frame parse, Ping shortcut), and their likeness is the point.
class MessagePackHubProtocol(HubProtocol):
    """SignalR's MessagePack hub protocol: VarInt-length-prefixed MessagePack arrays.

    :param max_message_size: see :class:`~signalr.protocol.base.HubProtocol`.
    """

    name = "messagepack"
    version = 2
    transfer_format = TransferFormat.BINARY

    unreadable_message = "Error reading MessagePack data."

    def _split_frames(self, buffer: bytes | str, limit: int | None) -> tuple[list[bytes], bytes]:
        return split_length_prefixed(buffer, max_message_size=limit)

    def _parse_frame(self, frame: bytes) -> HubMessage | None:
        return _parse_payload(frame)

    def write_message(self, message: HubMessage) -> bytes:
        """See :meth:`HubProtocol.write_message`."""
        if message is PING:
            return _PING_FRAME
        try:
            payload = msgpack.packb(_shape(message), use_bin_type=True, datetime=True)
        except SerializationError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"Cannot encode message as MessagePack: {exc}") from exc
        return frame_length_prefixed(payload)


_PING_FRAME = b"\x02\x91\x06"
