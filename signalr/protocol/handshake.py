"""The handshake: a tiny JSON protocol that runs before any hub protocol is chosen.

The client's first record is always JSON (even for MessagePack) terminated by ``0x1E``:
``{"protocol":"json","version":1}``. The server answers ``{}`` or ``{"error":"..."}`` (never a ``type``
key), and closes after an error. Hub messages may follow the request in the same transport unit, so the
parser hands back whatever follows the first record.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import ujson

from ..errors import HandshakeError
from .base import DEFAULT_MAX_MESSAGE_SIZE, HubProtocol
from .framing import RECORD_SEPARATOR, as_bytes
from .messages import TransferFormat
from .registry import get_protocol


__all__ = [
    "HANDSHAKE_CANCELED",
    "HANDSHAKE_UNEXPECTED_ERROR",
    "HandshakeRequest",
    "parse_handshake_request",
    "write_handshake_response",
    "select_protocol",
]

HANDSHAKE_CANCELED = "Handshake was canceled."
HANDSHAKE_UNEXPECTED_ERROR = "An unexpected error occurred during connection handshake."

_SUCCESS = b"{}" + RECORD_SEPARATOR


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeRequest:
    """What the client asked for.

    :param protocol: hub protocol name, e.g. ``"json"`` or ``"messagepack"``.
    :param version: hub protocol version (2 means the client wants stateful reconnect).
    """

    protocol: str
    version: int


def _malformed(detail: str, payload: bytes) -> HandshakeError:
    content = payload.decode("utf-8", errors="replace")
    return HandshakeError(HANDSHAKE_UNEXPECTED_ERROR, detail=f"{detail} Message content: {content}")


def _decode(payload: bytes) -> HandshakeRequest:
    try:
        document: Any = ujson.loads(payload)
    except Exception as exc:  # ujson raises several types (JSONDecodeError, OverflowError, ...)
        raise HandshakeError(HANDSHAKE_UNEXPECTED_ERROR, detail=f"Error reading JSON. {exc}") from None
    if not isinstance(document, dict):
        raise _malformed("Unexpected JSON Token Type. Expected a JSON Object.", payload)
    protocol = document.get("protocol")
    version = document.get("version")
    if protocol is not None and not isinstance(protocol, str):
        raise _malformed("Expected 'protocol' to be of type String.", payload)
    if version is not None and (isinstance(version, bool) or not isinstance(version, (int, float))):
        raise _malformed("Expected 'version' to be of type Number.", payload)
    if isinstance(version, float) or (isinstance(version, int) and not -(2**31) <= version < 2**31):
        raise _malformed("Expected 'version' to be a 32-bit integer.", payload)
    if protocol is None:
        raise _malformed("Missing required property 'protocol'.", payload)
    if version is None:
        raise _malformed("Missing required property 'version'.", payload)
    return HandshakeRequest(protocol=protocol, version=version)


def parse_handshake_request(
    buffer: bytes | str, *, max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
) -> tuple[HandshakeRequest | None, bytes]:
    """Parse the handshake record at the start of ``buffer``.

    :param buffer: everything received so far on the connection (``str`` for a text frame is accepted).
    :param max_message_size: longest accepted request including its separator (``None``: no limit); an oversized
        request is answered like .NET does (it never completes, so the handshake is canceled).
    :returns: ``(None, buffer)`` while the first record is incomplete, else the request and the bytes after
        the record (hub messages the client sent in the same unit).
    :raises HandshakeError: the request is malformed; ``str(e)`` is the text for the error response.
    """
    try:
        data = as_bytes(buffer)
    except TypeError:
        raise HandshakeError(HANDSHAKE_UNEXPECTED_ERROR, detail="Handshake data is not bytes.") from None
    end = data.find(RECORD_SEPARATOR)
    if end < 0:
        if max_message_size is not None and len(data) >= max_message_size:
            raise HandshakeError(HANDSHAKE_CANCELED, detail="Handshake request exceeded the maximum size.")
        return None, data
    if max_message_size is not None and end + 1 > max_message_size:
        raise HandshakeError(HANDSHAKE_CANCELED, detail="Handshake request exceeded the maximum size.")
    return _decode(data[:end]), data[end + 1 :]


def write_handshake_response(error: str | None = None) -> bytes:
    """Encode the framed handshake response.

    :param error: ``None`` for success (exactly ``{}``), else the error text.
    """
    if error is None:
        return _SUCCESS
    # The text may echo client input (a protocol name) holding lone surrogates, which UTF-8 cannot carry.
    error = error.encode("utf-8", errors="replace").decode("utf-8")
    body = ujson.dumps({"error": error}, ensure_ascii=False, escape_forward_slashes=False)
    return body.encode("utf-8") + RECORD_SEPARATOR


def select_protocol(
    request: HandshakeRequest,
    *,
    protocols: Mapping[str, HubProtocol] | None = None,
    transfer_formats: Collection[TransferFormat] = (TransferFormat.TEXT, TransferFormat.BINARY),
) -> HubProtocol:
    """Apply .NET's handshake checks, in .NET's order, and return the protocol to use.

    :param request: the parsed handshake request.
    :param protocols: enabled protocols by name; ``None`` means every built-in protocol.
    :param transfer_formats: formats the current transport can carry (SSE: Text only).
    :raises HandshakeError: unknown protocol, unsupported version or unusable transfer format.
    """
    if protocols is None:
        protocol = get_protocol(request.protocol)
    else:
        protocol = protocols.get(request.protocol)
    if protocol is None:
        raise HandshakeError(f"The protocol '{request.protocol}' is not supported.")
    if not protocol.is_version_supported(request.version):
        raise HandshakeError(
            f"The server does not support version {request.version} of the '{request.protocol}' protocol."
        )
    if protocol.transfer_format not in transfer_formats:
        raise HandshakeError(
            f"Cannot use the '{request.protocol}' protocol on the current transport. "
            f"The transport does not support '{protocol.transfer_format.value}' transfer format."
        )
    return protocol
