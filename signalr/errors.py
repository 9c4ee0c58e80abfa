"""Exceptions shared by every layer of the SignalR server.

The text of :class:`ProtocolError` and :class:`HandshakeError` is part of the wire contract: it is what a
client may see (in a Close message with detailed errors, or in the handshake response), so the strings
mirror ASP.NET Core's and must not be reworded casually.
"""

from __future__ import annotations

__all__ = [
    "SignalRError",
    "ProtocolError",
    "MessageTooLargeError",
    "HandshakeError",
    "SerializationError",
    "ConnectionNotFound",
]


class SignalRError(Exception):
    """Base class for every error raised by the ``signalr`` package."""


class ProtocolError(SignalRError):
    """A hub message could not be parsed; ``str(e)`` is the exact client-visible text.

    The connection that produced it must be closed (.NET closes with ``allowReconnect: true``).
    """


class MessageTooLargeError(ProtocolError):
    """A single frame is longer than the configured maximum receive size.

    :param limit: the configured maximum message size in bytes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The maximum message size of {limit}B was exceeded. The message size can be configured in AddHubOptions."
        )
        self.limit = limit


class HandshakeError(SignalRError):
    """The handshake request is malformed or asks for something unsupported.

    ``str(e)`` is the text to send back in ``{"error": ...}``; ``detail`` carries the underlying reason,
    which .NET only appends when detailed errors are enabled.

    :param message: the client-visible error text.
    :param detail: the internal reason (for logs or detailed errors), or ``None``.
    """

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class SerializationError(SignalRError):
    """An outgoing message holds a value the protocol cannot encode (e.g. an arbitrary object, NaN)."""


class ConnectionNotFound(SignalRError):
    """No connection with the given id or token exists (used by the connection layer)."""
