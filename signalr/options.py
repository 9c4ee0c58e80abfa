"""Server options for a SignalR hub endpoint (the Python mirror of ASP.NET's ``HubOptions``).

Defaults follow the .NET server (reference §17) so that every official client's timers line up.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import StrEnum


class HttpTransportType(StrEnum):
    """The HTTP transport a connection rides on (ASP.NET's ``HttpTransportType``), named exactly as in
    the negotiate payload (case-sensitive on the wire)."""

    WEBSOCKETS = "WebSockets"
    SERVER_SENT_EVENTS = "ServerSentEvents"
    LONG_POLLING = "LongPolling"


ALL_TRANSPORTS: tuple[HttpTransportType, ...] = (
    HttpTransportType.WEBSOCKETS,
    HttpTransportType.SERVER_SENT_EVENTS,
    HttpTransportType.LONG_POLLING,
)

#: RFC 3986's unreserved characters: what a URL carries as it is.
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class HubOptions:
    """Per-endpoint settings; all durations are seconds.

    :param keep_alive_interval: how often an idle WS/SSE connection gets a hub Ping.
    :param client_timeout_interval: silence (not even a Ping) allowed from the client, counted from
        the handshake on, before the server closes the connection (WS/SSE; paused while one of its
        invocations runs). Clients ping every 15 s by default.
    :param handshake_timeout: time allowed for the handshake request to arrive.
    :param maximum_receive_message_size: largest single hub message accepted (handshake included);
        ``None`` means unlimited.
    :param enable_detailed_errors: append exception type and text to client-visible errors.
    :param stream_buffer_capacity: items buffered per client-to-server stream before back-pressure.
    :param transports: enabled transports, in the order advertised by negotiate.
    :param protocols: enabled hub protocol names.
    :param allow_stateful_reconnects: honour ``useStatefulReconnect=true`` on negotiate.
    :param stateful_reconnect_buffer_size: unacknowledged bytes kept for replay before sends wait.
    :param disconnect_timeout: how long an inactive (never attached / between polls / dropped
        stateful) connection lives before it is disposed.
    :param long_poll_timeout: an idle poll is answered with an empty 200 after this long; must stay
        below the JS client's fixed 100 s request timeout.
    :param heartbeat_interval: period of the scan driving reaping, keep-alive and client timeouts.
    :param allowed_origins: browser origins allowed for CORS and WebSocket upgrades.
    :param close_timeout: how long graceful shutdown waits for connections to finish.
    :param maximum_send_buffer_size: bytes a connection may have queued for its client beyond what
        the socket took, and bytes that may wait for a client that is not collecting them (a
        long-polling client between polls); a client that falls further behind is disconnected
        (WebSockets: close 1008; SSE and long polling: the Close message with an error, after which
        polls get 204, then 404). Only bytes queued before a message count, so one message larger
        than this still goes to a client that keeps up.
    :param transport_send_timeout: a write to the client that makes no progress for this long
        aborts the connection (ASP.NET's ``TransportSendTimeout``).
    :param maximum_parallel_invocations_per_client: non-streaming hub invocations that may run at
        once for one connection. While that many run, the next one waits, and so does everything
        the client sent after it: the connection stops reading its transport (a WebSocket's socket
        is left unread, a send POST is not answered) instead of queueing parsed messages. Streams
        and methods that take an upload stream run beside the others, as in ASP.NET.
    :param transport_max_buffer_size: the largest WebSocket message or POST body the transport
        buffers whole; a larger one is refused before it is read (WebSockets: close 1009, POST:
        413). Raised to ``maximum_receive_message_size`` when that is larger, so that every
        acceptable hub message fits; unbounded when that is ``None``.
    :param application_max_buffer_size: received bytes that may wait for the hub before the
        transport stops reading (ASP.NET's pause threshold of the same name).
    :param connection_id_prefix: starts every connection id and token of this endpoint (e.g.
        ``"3."``), so that a front process sharing one port between several worker processes can
        send each request of a connection, by its ``id=``, to the worker that holds it. Ids get it
        too, not only tokens: negotiate version 0 clients (and skip-negotiation) send the connection
        id as ``id=``. Only URL-safe characters (letters, digits, ``-``, ``.``, ``_``, ``~``), since
        clients put it in the query without escaping. Empty by default.
    """

    keep_alive_interval: float = 15.0
    client_timeout_interval: float = 30.0
    handshake_timeout: float = 15.0
    maximum_receive_message_size: int | None = 32 * 1024
    enable_detailed_errors: bool = False
    stream_buffer_capacity: int = 10
    transports: tuple[HttpTransportType, ...] = ALL_TRANSPORTS
    protocols: tuple[str, ...] = ("json", "messagepack")
    allow_stateful_reconnects: bool = False
    stateful_reconnect_buffer_size: int = 100_000
    disconnect_timeout: float = 15.0
    long_poll_timeout: float = 90.0
    heartbeat_interval: float = 1.0
    allowed_origins: tuple[str, ...] = ()
    close_timeout: float = 5.0
    maximum_send_buffer_size: int = 1024 * 1024
    transport_send_timeout: float = 10.0
    maximum_parallel_invocations_per_client: int = 1
    transport_max_buffer_size: int = 64 * 1024
    application_max_buffer_size: int = 64 * 1024
    connection_id_prefix: str = ""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float | int) and not isinstance(value, bool) and value <= 0:
                raise ValueError(f"HubOptions.{field.name} must be positive, got {value!r}")
        if not self.transports:
            raise ValueError("HubOptions.transports must enable at least one transport")
        for transport in self.transports:
            HttpTransportType(transport)
        if not self.protocols:
            raise ValueError("HubOptions.protocols must enable at least one protocol")
        prefix = self.connection_id_prefix
        if not isinstance(prefix, str) or not _URL_SAFE.fullmatch(prefix):
            raise ValueError(
                "HubOptions.connection_id_prefix may hold only letters, digits, '-', '.', '_' and '~' "
                f"(clients send it in a URL without escaping), got {prefix!r}"
            )

    @property
    def receive_unit_limit(self) -> int | None:
        """The largest WebSocket message or POST body accepted, ``None`` for no limit.

        One unit may carry several hub messages (the JS client joins the sends it makes while one
        is in flight), so the transport buffer size is the floor even when messages are smaller.
        """
        if self.maximum_receive_message_size is None:
            return None
        return max(self.maximum_receive_message_size, self.transport_max_buffer_size)
