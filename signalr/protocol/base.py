"""The hub protocol interface shared by the JSON and MessagePack encodings (the registry of both is
:mod:`.registry`, so that neither encoding imports a module that imports it)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ..errors import ProtocolError
from .messages import CompletionMessage, HubMessage, TransferFormat

__all__ = ["DEFAULT_MAX_MESSAGE_SIZE", "HubProtocol"]

# .NET's HubOptions.MaximumReceiveMessageSize default; the hub layer passes its own configured value.
DEFAULT_MAX_MESSAGE_SIZE = 32 * 1024


class HubProtocol(ABC):
    """Encodes and decodes hub messages for one wire format. Pure: no I/O, no clock, no shared state.

    :param max_message_size: longest accepted incoming frame (separator/prefix included); defaults to .NET's
        32 KiB so an unconfigured parser cannot be made to buffer without bound. ``None`` disables the limit.
        :meth:`parse_messages` may override it per call.
    """

    name: str
    version: int
    transfer_format: TransferFormat

    def __init__(self, *, max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size

    #: The ProtocolError text for a buffer that cannot even be split into frames.
    unreadable_message: str = "Error reading hub message."

    def parse_messages(
        self, buffer: bytes | str, *, max_message_size: int | None = None
    ) -> tuple[list[HubMessage], bytes]:
        """Decode every complete message in ``buffer``.

        Messages of unknown type are skipped (forward compatibility), as .NET does.

        :param buffer: the leftover of the previous call followed by newly received bytes (a ``str`` from a
            WebSocket text frame is encoded as UTF-8 first).
        :param max_message_size: overrides the instance limit for this call.
        :returns: the decoded messages in order and the trailing partial frame to keep for next time.
        :raises ProtocolError: malformed input (``MessageTooLargeError`` for oversized frames); it is the
            only exception this method raises, whatever the input.
        """
        try:
            frames, rest = self._split_frames(buffer, self._limit(max_message_size))
        except ProtocolError:
            raise
        except Exception:  # e.g. a buffer object that cannot be converted to bytes
            raise ProtocolError(self.unreadable_message) from None
        messages: list[HubMessage] = []
        for frame in frames:
            message = self._parse_frame(frame)
            if message is not None:
                messages.append(message)
        return messages, rest

    @abstractmethod
    def _split_frames(self, buffer: bytes | str, limit: int | None) -> tuple[list[bytes], bytes]:
        """Split ``buffer`` into complete frame payloads and the trailing partial frame."""

    @abstractmethod
    def _parse_frame(self, frame: bytes) -> HubMessage | None:
        """Decode one frame payload; None for a message of unknown type. Raises only ProtocolError."""

    @abstractmethod
    def write_message(self, message: HubMessage) -> bytes:
        """Encode one message as a complete frame (separator or length prefix included).

        :param message: the message to send.
        :raises SerializationError: the message holds a value this encoding cannot represent.
        """

    def write_completion(self, invocation_id: str, result: Any) -> bytes:
        """Encode a successful Completion of ``invocation_id`` carrying ``result`` (the hot path of
        every invocation); equal to writing ``CompletionMessage.with_result(invocation_id, result)``.

        :raises SerializationError: ``result`` cannot be represented.
        """
        return self.write_message(CompletionMessage.with_result(invocation_id, result))

    def is_version_supported(self, version: int) -> bool:
        """Whether a client asking for ``version`` in its handshake may use this protocol.

        .NET accepts every version up to its own (2: stateful reconnect), older clients send 1.

        :param version: the version from the handshake request.
        """
        return version <= self.version

    def _limit(self, override: int | None) -> int | None:
        return override if override is not None else self.max_message_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_message_size={self.max_message_size!r})"

