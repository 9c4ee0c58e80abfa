"""The JSON hub protocol (``"json"``, Text transfer format).

Parsing mirrors .NET's ``JsonHubProtocol``: properties may come in any order, known properties are
type-checked as they are met (whatever the message type), then the required ones are checked per type with
.NET's exact ``InvalidDataException`` texts. Output is byte-for-byte .NET's canonical form: ``type`` first,
absent optional fields omitted (never ``null``), ``headers`` only when non-empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import ujson

from ..errors import ProtocolError, SerializationError
from .base import HubProtocol
from .framing import frame_record, split_records
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

__all__ = ["JsonHubProtocol"]

_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)
_ABSENT = object()


def _missing(name: str) -> ProtocolError:
    return ProtocolError(f"Missing required property '{name}'.")


def _token_name(value: Any) -> str:
    # The names System.Text.Json's JsonTokenType uses, as .NET prints them in its errors.
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if value is None:
        return "Null"
    return "Number"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Fields:
    """The envelope of one message after per-property validation."""

    __slots__ = (
        "type",
        "invocation_id",
        "target",
        "error",
        "allow_reconnect",
        "arguments",
        "stream_ids",
        "headers",
        "item",
        "result",
        "sequence_id",
    )

    def __init__(self) -> None:
        self.type: int | None = None
        self.invocation_id: str | None = None
        self.target: str | None = None
        self.error: str | None = None
        self.allow_reconnect = False
        self.arguments: list[Any] | None = None
        self.stream_ids: tuple[str, ...] = ()
        self.headers: dict[str, str] | None = None
        self.item: Any = _ABSENT
        self.result: Any = _ABSENT
        self.sequence_id: int | None = None


def _read_string(name: str, value: Any) -> str | None:
    # JSON null counts as absent: signalrcore sends "error": null next to a result.
    if value is None or isinstance(value, str):
        return value
    raise ProtocolError(f"Expected '{name}' to be of type String.")


def _read_type(value: Any) -> int:
    if not _is_number(value):
        raise ProtocolError("Expected 'type' to be of type Number.")
    if isinstance(value, float) or value not in _INT32:
        raise ProtocolError("Expected 'type' to be a 32-bit integer.")
    return int(value)


def _read_sequence_id(value: Any) -> int:
    if value is None:
        raise _missing("sequenceId")
    if not _is_number(value):
        raise ProtocolError("Expected 'sequenceId' to be of type Number.")
    if isinstance(value, float) or value not in _INT64:
        raise ProtocolError("Expected 'sequenceId' to be a 64-bit integer.")
    return int(value)


def _read_headers(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        raise ProtocolError("Expected 'headers' to be of type StartObject.")
    for key, header in value.items():
        if not isinstance(header, str):
            raise ProtocolError(f"Expected header '{key}' to be of type String.")
    return value or None


def _read_stream_ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ProtocolError("Expected 'streamIds' to be of type Array.")
    if not all(isinstance(stream_id, str) for stream_id in value):
        raise ProtocolError("Expected every entry of 'streamIds' to be of type String.")
    return tuple(value)


def _read_fields(document: dict[str, Any]) -> _Fields:
    fields = _Fields()
    for name, value in document.items():
        if name == "type":
            fields.type = _read_type(value)
        elif name == "invocationId":
            fields.invocation_id = _read_string(name, value)
        elif name == "target":
            fields.target = _read_string(name, value)
        elif name == "error":
            fields.error = _read_string(name, value)
        elif name == "allowReconnect":
            if not isinstance(value, bool):
                raise ProtocolError("Expected 'allowReconnect' to be true or false.")
            fields.allow_reconnect = value
        elif name == "arguments":
            if not isinstance(value, list):
                raise ProtocolError("Expected 'arguments' to be of type Array.")
            fields.arguments = value
        elif name == "streamIds":
            fields.stream_ids = _read_stream_ids(value)
        elif name == "headers":
            fields.headers = _read_headers(value)
        elif name == "item":
            fields.item = value
        elif name == "result":
            fields.result = value
        elif name == "sequenceId":
            fields.sequence_id = _read_sequence_id(value)
        # Unknown properties are ignored for forward compatibility.
    return fields


def _bind_invocation(f: _Fields) -> InvocationMessage:
    if not f.target:
        raise _missing("target")
    if f.arguments is None:
        raise _missing("arguments")
    return InvocationMessage(
        target=f.target,
        arguments=tuple(f.arguments),
        invocation_id=f.invocation_id or None,
        stream_ids=f.stream_ids,
        headers=f.headers,
    )


def _bind_stream_invocation(f: _Fields) -> StreamInvocationMessage:
    if not f.invocation_id:
        raise _missing("invocationId")
    if f.arguments is None:
        raise _missing("arguments")
    if not f.target:
        raise _missing("target")
    return StreamInvocationMessage(
        invocation_id=f.invocation_id,
        target=f.target,
        arguments=tuple(f.arguments),
        stream_ids=f.stream_ids,
        headers=f.headers,
    )


def _bind_stream_item(f: _Fields) -> StreamItemMessage:
    if not f.invocation_id:
        raise _missing("invocationId")
    if f.item is _ABSENT:
        raise _missing("item")
    return StreamItemMessage(invocation_id=f.invocation_id, item=f.item, headers=f.headers)


def _bind_completion(f: _Fields) -> CompletionMessage:
    if not f.invocation_id:
        raise _missing("invocationId")
    has_result = f.result is not _ABSENT
    if f.error is not None and has_result:
        raise ProtocolError("The 'error' and 'result' properties are mutually exclusive.")
    return CompletionMessage(
        invocation_id=f.invocation_id,
        error=f.error,
        result=f.result if has_result else None,
        has_result=has_result,
        headers=f.headers,
    )


def _bind_cancel(f: _Fields) -> CancelInvocationMessage:
    if not f.invocation_id:
        raise _missing("invocationId")
    return CancelInvocationMessage(invocation_id=f.invocation_id, headers=f.headers)


def _bind_ack(f: _Fields) -> AckMessage:
    if f.sequence_id is None:
        raise _missing("sequenceId")
    return AckMessage(sequence_id=f.sequence_id)


def _bind_sequence(f: _Fields) -> SequenceMessage:
    if f.sequence_id is None:
        raise _missing("sequenceId")
    return SequenceMessage(sequence_id=f.sequence_id)


_BINDERS: dict[int, Callable[[_Fields], HubMessage]] = {
    MessageType.INVOCATION: _bind_invocation,
    MessageType.STREAM_ITEM: _bind_stream_item,
    MessageType.COMPLETION: _bind_completion,
    MessageType.STREAM_INVOCATION: _bind_stream_invocation,
    MessageType.CANCEL_INVOCATION: _bind_cancel,
    MessageType.PING: lambda f: PING,
    MessageType.CLOSE: lambda f: CloseMessage(error=f.error, allow_reconnect=f.allow_reconnect),
    MessageType.ACK: _bind_ack,
    MessageType.SEQUENCE: _bind_sequence,
}


def _parse_record(payload: bytes) -> HubMessage | None:
    try:
        document = ujson.loads(payload)
    except Exception:  # ujson raises JSONDecodeError, OverflowError, UnicodeDecodeError, RecursionError...
        raise ProtocolError("Error reading JSON.") from None
    if not isinstance(document, dict):
        raise ProtocolError(f"Unexpected JSON Token Type '{_token_name(document)}'. Expected a JSON Object.")
    fields = _read_fields(document)
    if fields.type is None:
        raise _missing("type")
    binder = _BINDERS.get(fields.type)
    # Unknown types are dropped so newer peers can add message types.
    return binder(fields) if binder is not None else None


def _dumps(document: Mapping[str, Any]) -> bytes:
    try:
        text = ujson.dumps(document, ensure_ascii=False, escape_forward_slashes=False, allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError, OverflowError) as exc:  # UnicodeEncodeError is a ValueError
        raise SerializationError(f"Cannot encode message as JSON: {exc}") from exc


def _envelope(message: HubMessage) -> dict[str, Any]:
    document: dict[str, Any] = {"type": int(message.message_type)}
    headers = getattr(message, "headers", None)
    if headers:
        document["headers"] = dict(headers)
    match message:
        case InvocationMessage() | StreamInvocationMessage():
            if message.invocation_id:
                document["invocationId"] = message.invocation_id
            document["target"] = message.target
            document["arguments"] = list(message.arguments)
            if message.stream_ids:
                document["streamIds"] = list(message.stream_ids)
        case StreamItemMessage():
            document["invocationId"] = message.invocation_id
            document["item"] = message.item
        case CompletionMessage():
            document["invocationId"] = message.invocation_id
            if message.error:
                document["error"] = message.error
            elif message.has_result:
                document["result"] = message.result
        case CancelInvocationMessage():
            document["invocationId"] = message.invocation_id
        case PingMessage():
            pass
        case CloseMessage():
            if message.error is not None:
                document["error"] = message.error
            if message.allow_reconnect:
                document["allowReconnect"] = True
        case AckMessage() | SequenceMessage():
            document["sequenceId"] = message.sequence_id
        case _:
            raise SerializationError(f"Unsupported message type: {type(message).__name__}")
    return document


# A deliberate twin of MessagePackHubProtocol (msgpack_protocol.py): the two encodings answer the same
# questions in the same order (framing, per-frame parse, Ping shortcut), and their likeness is the point.
class JsonHubProtocol(HubProtocol):
    """SignalR's JSON hub protocol: one JSON object per ``0x1E``-terminated record.

    :param max_message_size: see :class:`~signalr.protocol.base.HubProtocol`.
    """

    name = "json"
    version = 2
    transfer_format = TransferFormat.TEXT

    unreadable_message = "Error reading JSON."

    def _split_frames(self, buffer: bytes | str, limit: int | None) -> tuple[list[bytes], bytes]:
        return split_records(buffer, max_message_size=limit)

    def _parse_frame(self, frame: bytes) -> HubMessage | None:
        return _parse_record(frame)

    def write_message(self, message: HubMessage) -> bytes:
        """See :meth:`HubProtocol.write_message`."""
        if message is PING:
            return _PING_FRAME
        return frame_record(_dumps(_envelope(message)))

    def write_completion(self, invocation_id: str, result: Any) -> bytes:
        """See :meth:`HubProtocol.write_completion`; builds the canonical document directly."""
        return frame_record(_dumps({"type": 3, "invocationId": invocation_id, "result": result}))


_PING_FRAME = b'{"type":6}\x1e'
