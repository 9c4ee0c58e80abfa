"""Negotiate: version selection and the response payload (pure, no I/O).

Version 0 clients (signalrcore, pysignalr) get no ``connectionToken`` and use ``connectionId`` as
``id=``; version 1 clients get a separate secret token. ``negotiateVersion`` is always written
because signalrcore rejects a payload without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from signalr.options import HttpTransportType

MIN_NEGOTIATE_VERSION = 0
MAX_NEGOTIATE_VERSION = 1

_TRANSFER_FORMATS: dict[HttpTransportType, tuple[str, ...]] = {
    HttpTransportType.WEBSOCKETS: ("Text", "Binary"),
    # EventSource carries text only, so MessagePack clients must skip SSE.
    HttpTransportType.SERVER_SENT_EVENTS: ("Text",),
    HttpTransportType.LONG_POLLING: ("Text", "Binary"),
}


class NegotiateVersionError(ValueError):
    """The requested negotiate version is unusable; ``str(exc)`` is the client-visible text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiateResult:
    """What negotiate decided for one new connection."""

    version: int
    connection_id: str
    connection_token: str
    transports: tuple[HttpTransportType, ...]
    use_stateful_reconnect: bool


def select_version(raw: str | None, *, min_version: int = MIN_NEGOTIATE_VERSION) -> int:
    """Pick the negotiate version for a ``negotiateVersion`` query value.

    :param raw: the query value, ``None`` when absent (which means version 0).
    :param min_version: the lowest version this server accepts.
    :raises NegotiateVersionError: non-integer or too old a version.
    """
    if raw is None:
        requested = 0
    else:
        try:
            requested = int(raw.strip())
        except ValueError:
            raise NegotiateVersionError("The client requested a non-integer protocol version.") from None
    if requested < min_version:
        raise NegotiateVersionError(
            f"The client requested version '{requested}', but the server does not support this version."
        )
    return min(requested, MAX_NEGOTIATE_VERSION)


def parse_bool_query(raw: str | None) -> bool:
    """ASP.NET's ``bool.TryParse``: only a case-insensitive ``true`` counts."""
    return raw is not None and raw.strip().lower() == "true"


def transfer_formats(transport: HttpTransportType) -> tuple[str, ...]:
    """Transfer formats a transport can carry (``Text`` / ``Binary``)."""
    return _TRANSFER_FORMATS[transport]


def negotiate_payload(result: NegotiateResult) -> bytes:
    """Serialize the 200 response body for a successful negotiate."""
    body: dict[str, object] = {
        "negotiateVersion": result.version,
        "connectionId": result.connection_id,
    }
    if result.version > 0:
        body["connectionToken"] = result.connection_token
    body["availableTransports"] = [
        {"transport": str(t), "transferFormats": list(_TRANSFER_FORMATS[t])} for t in result.transports
    ]
    # Only when the client asked: the JS client aborts if the server volunteers it.
    if result.use_stateful_reconnect:
        body["useStatefulReconnect"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def negotiate_error_payload(message: str) -> bytes:
    """Serialize the error form (still HTTP 200; clients abort start with ``message``)."""
    return json.dumps({"error": message}, separators=(",", ":")).encode()


def advertised_transports(
    enabled: Sequence[HttpTransportType], *, websockets_available: bool = True
) -> tuple[HttpTransportType, ...]:
    """Transports to list, in negotiate order (the JS client tries them in this order)."""
    return tuple(t for t in enabled if websockets_available or t is not HttpTransportType.WEBSOCKETS)
