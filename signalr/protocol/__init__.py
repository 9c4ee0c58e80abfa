"""Sans-IO SignalR hub protocol layer: messages, framing, handshake, JSON and MessagePack encodings,
the registry of both (:mod:`.registry`) and stateful reconnect's sequencing (:mod:`.stateful`).

Nothing here performs I/O or reads a clock; transports feed bytes in and write the bytes that come out.
"""

from ..errors import HandshakeError, MessageTooLargeError, ProtocolError, SerializationError, SignalRError
from .base import DEFAULT_MAX_MESSAGE_SIZE, HubProtocol
from .framing import (
    RECORD_SEPARATOR,
    as_bytes,
    decode_varint,
    encode_varint,
    frame_length_prefixed,
    frame_record,
    split_length_prefixed,
    split_records,
)
from .handshake import (
    HANDSHAKE_CANCELED,
    HANDSHAKE_UNEXPECTED_ERROR,
    HandshakeRequest,
    parse_handshake_request,
    select_protocol,
    write_handshake_response,
)
from .json_protocol import JsonHubProtocol
from .messages import (
    PING,
    TRACKABLE_TYPES,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    Headers,
    HubMessage,
    InvocationMessage,
    MessageType,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
    is_trackable,
)
from .msgpack_protocol import MessagePackHubProtocol
from .registry import get_protocol, protocol_names

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "HANDSHAKE_CANCELED",
    "HANDSHAKE_UNEXPECTED_ERROR",
    "PING",
    "RECORD_SEPARATOR",
    "TRACKABLE_TYPES",
    "AckMessage",
    "CancelInvocationMessage",
    "CloseMessage",
    "CompletionMessage",
    "HandshakeError",
    "HandshakeRequest",
    "Headers",
    "HubMessage",
    "HubProtocol",
    "InvocationMessage",
    "JsonHubProtocol",
    "MessagePackHubProtocol",
    "MessageTooLargeError",
    "MessageType",
    "PingMessage",
    "ProtocolError",
    "SequenceMessage",
    "SerializationError",
    "SignalRError",
    "StreamInvocationMessage",
    "StreamItemMessage",
    "TransferFormat",
    "as_bytes",
    "decode_varint",
    "encode_varint",
    "frame_length_prefixed",
    "frame_record",
    "get_protocol",
    "is_trackable",
    "parse_handshake_request",
    "protocol_names",
    "select_protocol",
    "split_length_prefixed",
    "split_records",
    "write_handshake_response",
]
