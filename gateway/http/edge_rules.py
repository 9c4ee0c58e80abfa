"""The HTTP edge's rules, free of I/O: connection caps, request-head limits and the answers that enforce them.

:mod:`gateway.http.edge` applies them to Tornado's server; everything here works on plain values, so the rules
are testable without a socket. Every refusal is a complete HTTP/1.1 response with a JSON
``{"message": ...}`` body and ``Connection: close``: a client (or the person debugging it) always learns
why, even when the request never reached a route.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from http.client import responses

from gateway.model import jsonutil
from geo.networks import rate_limit_subject

#: The largest request head (request line and headers) read; beyond it 431 (or 414 for a long URL).
#: As Kestrel's ``MaxRequestHeadersTotalSize``.
MAX_HEAD_BYTES = 32 * 1024
#: The longest request target (path and query); beyond it 414. As Kestrel's ``MaxRequestLineSize``.
MAX_TARGET_BYTES = 8 * 1024
#: The largest body any route reads; the REST routes allow less (64 KiB, :mod:`gateway.model.request`).
MAX_BODY_BYTES = 1024 * 1024
#: Leading part of an IPv6 address that names one client by default (a /64 is what one subscriber is given).
DEFAULT_IPV6_PREFIX = 64

RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class EdgeError:
    """A refusal the edge answers itself. ``retry_after`` (seconds) is sent for 503."""

    status: int
    message: str
    retry_after: int | None = None


TOO_MANY_FROM_CLIENT = EdgeError(
    503, "Too many open connections from your network address. Close some, or try again shortly.",
    RETRY_AFTER_SECONDS)
TOO_MANY_IN_TOTAL = EdgeError(
    503, "The server has too many open connections. Please try again shortly.", RETRY_AFTER_SECONDS)
TARGET_TOO_LONG = EdgeError(414, f"The URL is longer than {MAX_TARGET_BYTES // 1024} KiB.")
HEAD_TOO_LARGE = EdgeError(431, f"The request headers are larger than {MAX_HEAD_BYTES // 1024} KiB in total.")
BODY_TOO_LARGE = EdgeError(413, f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB, the most any "
                                "route of this server accepts.")
NOT_HTTP = EdgeError(400, "The request is not valid HTTP/1.1 (a malformed request line, header, "
                          "Content-Length or chunk).")


def error_response(error: EdgeError, *, with_body: bool = True) -> bytes:
    """The whole HTTP/1.1 response for ``error`` (without a body for an answer to ``HEAD``)."""
    body = jsonutil.dumps({"message": error.message}).encode()
    lines = [
        f"HTTP/1.1 {error.status} {responses.get(error.status, 'Error')}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if error.retry_after is not None:
        lines.append(f"Retry-After: {error.retry_after}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if with_body else head


def head_error(target: str, content_length: str | None) -> EdgeError | None:
    """The refusal a request deserves from its head alone, before any route sees it, or ``None``.

    :param target: the request target (path and query) as sent.
    :param content_length: the ``Content-Length`` header, if any. One that is not a number is left to
        Tornado, which refuses it (and :mod:`gateway.http.edge` turns that into :data:`NOT_HTTP`).
    """
    if len(target) > MAX_TARGET_BYTES:
        return TARGET_TOO_LONG
    if content_length is not None:
        # Proxies sometimes repeat the header as "n, n"; equal values are one length (as Tornado reads it).
        first = content_length.split(",")[0].strip()
        if first.isdigit() and int(first) > MAX_BODY_BYTES:
            return BODY_TOO_LARGE
    return None


def oversize_head_error(buffered: bytes) -> EdgeError:
    """Which limit a head that did not end within :data:`MAX_HEAD_BYTES` broke, from its first bytes.

    :param buffered: the start of the head as received (at least its request line, or as much of it as came).
    """
    line = buffered.lstrip(b"\r\n").split(b"\n", 1)[0]
    parts = line.split(b" ", 2)
    target = parts[1] if len(parts) > 1 else b""
    return TARGET_TOO_LONG if len(target) > MAX_TARGET_BYTES else HEAD_TOO_LARGE


def client_key(host: str, ipv6_prefix_length: int = DEFAULT_IPV6_PREFIX) -> str:
    """The client a connection's peer address stands for: an IPv4 address, or an IPv6 address's network
    of ``ipv6_prefix_length`` bits (``Security.Ipv6PrefixLength``, as the rate limits count it).

    One subscriber is routinely given a whole IPv6 /64, so counting single addresses would let one
    client open connections from as many addresses as it likes.
    """
    # A zone index only names the local interface a link-local address came through.
    return rate_limit_subject(host.split("%", 1)[0], ipv6_prefix_length)


class ConnectionCaps:
    """Open connections per client and in total, against ``Limits.MaxConnectionsPerIp``/``MaxConnections``.

    :param total: most open connections in total; 0 = unlimited.
    :param per_client: most open connections per :func:`client_key`; 0 = unlimited.
    """

    def __init__(self, *, total: int, per_client: int) -> None:
        self._total = total
        self._per_client = per_client
        self._open: Counter[str] = Counter()
        self.open_total = 0

    def admit(self, key: str) -> EdgeError | None:
        """Count a new connection from ``key``; or, when a cap is reached, the refusal to answer it with."""
        if self._per_client and self._open[key] >= self._per_client:
            return TOO_MANY_FROM_CLIENT
        if self._total and self.open_total >= self._total:
            return TOO_MANY_IN_TOTAL
        self._open[key] += 1
        self.open_total += 1
        return None

    def release(self, key: str) -> None:
        """An admitted connection from ``key`` closed."""
        left = self._open[key] - 1
        if left > 0:
            self._open[key] = left
        else:
            del self._open[key]  # an empty count would keep every address ever seen
        self.open_total -= 1

    def open_from(self, key: str) -> int:
        return self._open.get(key, 0)
