"""Token → connection registry with the 1-second heartbeat (reaping, keep-alive ticks).

Reaping covers connections that were negotiated but never attached, long-polling clients that
stopped polling, and stateful-reconnect connections whose client did not come back in time.

A connection's tick may say when it next has something to do (its next Ping, its client timeout):
it is then visited only from that time on, through a heap, instead of on every heartbeat. 20,000 idle
WebSockets then cost about 1,300 visits a second (a Ping each every 15 s) rather than 20,000. A tick
that says nothing (``None``) is run on every heartbeat, as are connections without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable

from signalr.connections.connection import ConnectionStatus, HttpConnection
from signalr.connections.ids import new_connection_id, new_connection_token

log = logging.getLogger("signalr.transport")


class ConnectionManager:
    """Owns every :class:`HttpConnection` of one hub endpoint.

    :param disconnect_timeout: seconds an inactive connection survives.
    :param heartbeat_interval: seconds between scans.
    :param clock: monotonic time source (an input so tests can drive it).
    :param id_prefix: starts every connection id and token (see ``HubOptions.connection_id_prefix``).
    """

    def __init__(
        self,
        *,
        disconnect_timeout: float,
        heartbeat_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        id_prefix: str = "",
    ) -> None:
        self._connections: dict[str, HttpConnection] = {}
        #: Connections visited on every heartbeat (by token): those whose tick gave no next time.
        self._every_scan: dict[str, HttpConnection] = {}
        #: (time, order, token) of the others: visited once their time has come.
        self._due: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._id_prefix = id_prefix
        self._disconnect_timeout = disconnect_timeout
        self._heartbeat_interval = heartbeat_interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._connections.values()))

    def create(self, *, negotiate_version: int | None, stateful_reconnect: bool) -> HttpConnection:
        """Register a new connection. Version 0 (and skip-negotiation) reuse the id as token."""
        connection_id = new_connection_id(self._id_prefix)
        token = new_connection_token(self._id_prefix) if negotiate_version else connection_id
        connection = HttpConnection(
            connection_id=connection_id,
            token=token,
            negotiate_version=negotiate_version,
            stateful_reconnect=stateful_reconnect,
            now=self.clock(),
        )
        self._connections[token] = connection
        self._every_scan[token] = connection
        log.debug("created connection %s (negotiate v%s)", connection_id, negotiate_version)
        return connection

    def get(self, token: str) -> HttpConnection | None:
        """The live connection for ``token``, or ``None`` (→ 404)."""
        connection = self._connections.get(token)
        if connection is None or connection.disposed:
            return None
        return connection

    def remove(self, connection: HttpConnection) -> None:
        """Dispose ``connection`` and forget its token."""
        self._connections.pop(connection.token, None)
        self._every_scan.pop(connection.token, None)  # (its heap entry, if any, is skipped when due)
        if not connection.disposed:
            log.debug("disposing connection %s", connection.connection_id)
        connection.dispose()

    def scan(self, now: float) -> None:
        """One heartbeat: reap expired inactive connections and tick the others that are due."""
        for connection in list(self._every_scan.values()):
            self._visit(connection, now)
        due = self._due
        while due and due[0][0] <= now:
            _, _, token = heapq.heappop(due)
            connection = self._connections.get(token)
            if connection is not None and token not in self._every_scan:
                self._visit(connection, now)

    def _visit(self, connection: HttpConnection, now: float) -> None:
        token = connection.token
        if connection.disposed:
            self._connections.pop(token, None)
            self._every_scan.pop(token, None)
            return
        since = connection.inactive_since
        if connection.status is ConnectionStatus.INACTIVE and since is not None and now - since > self._disconnect_timeout:
            log.info("connection %s inactive for %.1fs, reaping", connection.connection_id, now - since)
            self.remove(connection)
            return
        next_at = None
        if connection.on_tick is not None:
            try:
                next_at = connection.on_tick(now)
            except Exception:
                # One broken connection must not stop the heartbeat for the others.
                log.exception("heartbeat tick failed for connection %s", connection.connection_id)
        if next_at is None:
            self._every_scan[token] = connection
        else:
            self._every_scan.pop(token, None)
            # Strictly later than now: a time already past is visited on the next heartbeat.
            heapq.heappush(self._due, (max(next_at, now + 1e-6), next(self._order), token))

    def start(self) -> None:
        """Start the heartbeat task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._heartbeat())

    async def stop(self) -> None:
        """Stop the heartbeat and dispose every connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for connection in list(self._connections.values()):
            self.remove(connection)
        self._due.clear()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            self.scan(self.clock())
