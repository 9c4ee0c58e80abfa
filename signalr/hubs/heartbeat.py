"""What one hub connection does on every heartbeat: keep-alive Pings, stateful-reconnect Acks, and
the client timeout, with the record of when the client was last heard from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from signalr.connections.connection import HttpConnection
from signalr.hubs.output import HubOutput
from signalr.options import HubOptions, HttpTransportType
from signalr.protocol import PING, AckMessage

log = logging.getLogger("signalr.hub")


class Heartbeat:
    """Keeps one handshaken connection alive, and ends it when its client falls silent.

    The receiving side sets :attr:`last_heard` whenever bytes arrive; the invocations count in
    :attr:`busy` while one runs, which pauses the client timeout (a long call is not silence).

    :param connection: the transport-level connection (its transport and whether one is attached).
    :param output: where Pings and Acks go.
    :param options: ``keep_alive_interval`` and ``client_timeout_interval``.
    :param last_ping: when the keep-alive interval started counting.
    :param now: the handshake's time: the client timeout runs from there.
    :param on_timeout: ends the connection when the client timed out.
    """

    __slots__ = ("last_heard", "busy", "_last_ping", "_connection", "_output", "_keep_alive", "_timeout", "_on_timeout")

    def __init__(
        self,
        *,
        connection: HttpConnection,
        output: HubOutput,
        options: HubOptions,
        last_ping: float,
        now: float,
        on_timeout: Callable[[], None],
    ) -> None:
        self.last_heard = now
        self.busy = 0
        self._last_ping = last_ping
        self._connection = connection
        self._output = output
        self._keep_alive = options.keep_alive_interval
        self._timeout = options.client_timeout_interval
        self._on_timeout = on_timeout

    def tick(self, now: float) -> float | None:
        """Called by the heartbeat: stateful Ack, keep-alive Ping, client timeout.

        Returns when the next Ping or timeout check is due, or ``None`` when this connection must be
        ticked on every heartbeat (stateful Acks, long polling, a running invocation, a closing output).
        """
        output = self._output
        if output.closing:
            return None
        if output.stateful is not None:
            due = output.stateful.ack_due(now)
            if due is not None:
                output.write(AckMessage(sequence_id=due))
        connection = self._connection
        if connection.transport is HttpTransportType.LONG_POLLING:
            return None  # long polling is inherently keep-alive: no Pings, no ping timeout
        if connection.inactive_since is not None:
            return None  # a stateful connection waiting for its client to re-attach
        if now - self._last_ping >= self._keep_alive:
            self._last_ping = now
            output.write(PING)
        if self.busy == 0 and now - self.last_heard > self._timeout:
            log.info("client timeout on connection %s", connection.connection_id)
            self._on_timeout()
            return None
        if output.stateful is not None or self.busy:
            return None
        # (The client may be heard from before then: the check then finds it alive and says when next.)
        return min(self._last_ping + self._keep_alive, self.last_heard + self._timeout)
