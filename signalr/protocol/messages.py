"""Hub message value objects, independent of any wire encoding.

One frozen dataclass per SignalR message type. Parsers in :mod:`json_protocol` and :mod:`msgpack_protocol`
produce them and writers consume them, so the rest of the server never touches JSON or MessagePack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, TypeAlias

__all__ = [
    "MessageType",
    "TransferFormat",
    "Headers",
    "InvocationMessage",
    "StreamInvocationMessage",
    "StreamItemMessage",
    "CompletionMessage",
    "CancelInvocationMessage",
    "PingMessage",
    "CloseMessage",
    "AckMessage",
    "SequenceMessage",
    "HubMessage",
    "PING",
    "TRACKABLE_TYPES",
    "is_trackable",
]


class MessageType(IntEnum):
    """The ``type`` discriminator used on the wire by both hub protocols."""

    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


class TransferFormat(StrEnum):
    """How a protocol's frames must travel: WebSocket text frames or binary frames."""

    TEXT = "Text"
    BINARY = "Binary"


Headers: TypeAlias = Mapping[str, str] | None


def _freeze_sequence(instance: object, name: str) -> None:
    # Callers naturally pass lists; storing tuples keeps the value object immutable.
    value = getattr(instance, name)
    if not isinstance(value, tuple):
        object.__setattr__(instance, name, tuple(value) if value is not None else ())


@dataclass(frozen=True, slots=True, kw_only=True)
class InvocationMessage:
    """Type 1: call ``target``. Without ``invocation_id`` it is fire-and-forget (no Completion is sent).

    :param target: hub or client method name.
    :param arguments: positional arguments, already decoded.
    :param invocation_id: id the Completion must echo, or ``None`` for a non-blocking call.
    :param stream_ids: ids of client-to-server upload streams bound to extra parameters.
    :param headers: optional string headers (accepted on input, never needed on output).
    """

    message_type: ClassVar[MessageType] = MessageType.INVOCATION
    target: str
    arguments: tuple[Any, ...] = ()
    invocation_id: str | None = None
    stream_ids: tuple[str, ...] = ()
    headers: Headers = None

    def __post_init__(self) -> None:
        _freeze_sequence(self, "arguments")
        _freeze_sequence(self, "stream_ids")


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamInvocationMessage:
    """Type 4: start a server-to-client stream; the id is mandatory.

    :param invocation_id: id echoed by every StreamItem and the final Completion.
    :param target: streaming method name.
    :param arguments: positional arguments, already decoded.
    :param stream_ids: ids of upload streams bound to extra parameters.
    :param headers: optional string headers.
    """

    message_type: ClassVar[MessageType] = MessageType.STREAM_INVOCATION
    invocation_id: str
    target: str
    arguments: tuple[Any, ...] = ()
    stream_ids: tuple[str, ...] = ()
    headers: Headers = None

    def __post_init__(self) -> None:
        _freeze_sequence(self, "arguments")
        _freeze_sequence(self, "stream_ids")


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamItemMessage:
    """Type 2: one item of a stream (either direction); ``item`` may be ``None``.

    :param invocation_id: the stream's invocation id (or upload stream id).
    :param item: the decoded item.
    :param headers: optional string headers.
    """

    message_type: ClassVar[MessageType] = MessageType.STREAM_ITEM
    invocation_id: str
    item: Any
    headers: Headers = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompletionMessage:
    """Type 3: the end of an invocation or stream.

    ``has_result`` distinguishes "returned ``None``" (``result: null`` on the wire) from "returned nothing"
    (no ``result`` key), which matters for streams where a result is not allowed.

    :param invocation_id: the id being completed.
    :param error: error text, or ``None`` on success.
    :param result: the returned value when ``has_result`` is true.
    :param has_result: whether a result (possibly ``None``) is carried.
    :param headers: optional string headers.
    """

    message_type: ClassVar[MessageType] = MessageType.COMPLETION
    invocation_id: str
    error: str | None = None
    result: Any = None
    has_result: bool = False
    headers: Headers = None

    def __post_init__(self) -> None:
        if self.error is not None and self.has_result:
            raise ValueError("A completion cannot carry both an error and a result.")

    @classmethod
    def with_result(cls, invocation_id: str, value: Any) -> CompletionMessage:
        """A successful completion carrying ``value`` (``None`` is written as ``result: null``)."""
        return cls(invocation_id=invocation_id, result=value, has_result=True)

    @classmethod
    def with_error(cls, invocation_id: str, error: str) -> CompletionMessage:
        """A failed completion with the client-visible ``error`` text."""
        return cls(invocation_id=invocation_id, error=error)

    @classmethod
    def empty(cls, invocation_id: str) -> CompletionMessage:
        """A completion without result or error (ends a stream)."""
        return cls(invocation_id=invocation_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelInvocationMessage:
    """Type 5: the client asks to cancel a stream or an in-flight invocation.

    :param invocation_id: the id to cancel.
    :param headers: optional string headers.
    """

    message_type: ClassVar[MessageType] = MessageType.CANCEL_INVOCATION
    invocation_id: str
    headers: Headers = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PingMessage:
    """Type 6: keep-alive; carries nothing."""

    message_type: ClassVar[MessageType] = MessageType.PING


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseMessage:
    """Type 7: the sender is closing the connection.

    :param error: error text, or ``None`` for a clean close.
    :param allow_reconnect: tells the JS client to run its automatic reconnect.
    """

    message_type: ClassVar[MessageType] = MessageType.CLOSE
    error: str | None = None
    allow_reconnect: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AckMessage:
    """Type 8 (stateful reconnect): every trackable message up to ``sequence_id`` was received.

    :param sequence_id: highest processed incoming sequence id.
    """

    message_type: ClassVar[MessageType] = MessageType.ACK
    sequence_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SequenceMessage:
    """Type 9 (stateful reconnect): the next trackable message the sender sends has this id.

    :param sequence_id: sequence id of the first replayed message.
    """

    message_type: ClassVar[MessageType] = MessageType.SEQUENCE
    sequence_id: int


HubMessage: TypeAlias = (
    InvocationMessage
    | StreamInvocationMessage
    | StreamItemMessage
    | CompletionMessage
    | CancelInvocationMessage
    | PingMessage
    | CloseMessage
    | AckMessage
    | SequenceMessage
)

PING = PingMessage()

# Only these are numbered, buffered and replayed under stateful reconnect.
TRACKABLE_TYPES = frozenset(
    {
        MessageType.INVOCATION,
        MessageType.STREAM_ITEM,
        MessageType.COMPLETION,
        MessageType.STREAM_INVOCATION,
        MessageType.CANCEL_INVOCATION,
    }
)


def is_trackable(message: HubMessage) -> bool:
    """Whether ``message`` takes part in stateful-reconnect sequencing (types 1-5).

    :param message: any hub message.
    """
    return message.message_type in TRACKABLE_TYPES
