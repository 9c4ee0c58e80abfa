"""One hub endpoint, independent of the web framework: options, connections, lifetime manager and
the running hub sessions. :mod:`signalr.tornado` maps HTTP requests onto it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from signalr.connections.connection import HttpConnection, RequestInfo
from signalr.connections.manager import ConnectionManager
from signalr.connections.negotiate import (
    NegotiateResult,
    NegotiateVersionError,
    advertised_transports,
    negotiate_error_payload,
    negotiate_payload,
    parse_bool_query,
    select_version,
)
from signalr.hubs.clients import HubContext
from signalr.hubs.hub import Hub
from signalr.hubs.hub_connection import HubConnection
from signalr.hubs.lifetime import HubLifetimeManager, InMemoryHubLifetimeManager
from signalr.hubs.methods import HubMethodTable
from signalr.options import HubOptions

log = logging.getLogger("signalr.transport")

#: Maps the connecting request to the hub's ``context.user``; may return an awaitable.
UserProvider = Callable[[RequestInfo], Any]


class HubServer:
    """One hub endpoint: options, connections, lifetime manager and running hub sessions.

    :param hub_class: the :class:`~signalr.hubs.hub.Hub` subclass to serve.
    :param options: endpoint options (defaults mirror ASP.NET).
    :param lifetime_manager: in-memory by default; pass a Redis one to scale out.
    :param user_provider: maps the connecting request to a user (``context.user``); may be async;
        raising :class:`PermissionError` refuses the request with 401.
    :param clock: monotonic time source for reaping, keep-alive and timeouts.
    """

    def __init__(
        self,
        hub_class: type[Hub],
        *,
        options: HubOptions | None = None,
        lifetime_manager: HubLifetimeManager | None = None,
        user_provider: UserProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub_class = hub_class
        self.options = options or HubOptions()
        self.lifetime = lifetime_manager or InMemoryHubLifetimeManager()
        self.methods = HubMethodTable(hub_class)
        self.clock = clock
        self.user_provider = user_provider
        self.connections = ConnectionManager(
            disconnect_timeout=self.options.disconnect_timeout,
            heartbeat_interval=self.options.heartbeat_interval,
            clock=clock,
            id_prefix=self.options.connection_id_prefix,
        )
        self.context = HubContext(self.lifetime)
        self.sessions: dict[str, HubConnection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Set by :meth:`shutdown`: negotiate refuses, since the connection it made would be closed at once.
        self.stopping = False

    async def start(self) -> None:
        """Start the lifetime manager and the heartbeat."""
        await self.lifetime.start()
        self.connections.start()

    async def shutdown(self) -> None:
        """Graceful stop: Close with ``allowReconnect`` to every client, then dispose everything."""
        self.stopping = True
        sessions = list(self.sessions.values())
        for session in sessions:
            session.abort(error=None, allow_reconnect=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.options.close_timeout)
        await self.connections.stop()
        await self.lifetime.close()

    def negotiate(self, query: Mapping[str, str]) -> bytes:
        """Create a connection for a negotiate request and return the response body."""
        try:
            version = select_version(query.get("negotiateversion"))
        except NegotiateVersionError as exc:
            return negotiate_error_payload(str(exc))
        stateful = self.options.allow_stateful_reconnects and parse_bool_query(query.get("usestatefulreconnect"))
        connection = self.connections.create(negotiate_version=version, stateful_reconnect=stateful)
        return negotiate_payload(
            NegotiateResult(
                version=version,
                connection_id=connection.connection_id,
                connection_token=connection.token,
                transports=advertised_transports(self.options.transports),
                use_stateful_reconnect=stateful,
            )
        )

    async def authenticate(self, request: RequestInfo) -> Any:
        """Run the user provider; :class:`PermissionError` propagates (→ 401)."""
        if self.user_provider is None:
            return None
        user = self.user_provider(request)
        return await user if inspect.isawaitable(user) else user

    def start_application(self, connection: HttpConnection, request: RequestInfo, user: Any) -> None:
        """Start the hub session of ``connection`` (first transport attach)."""
        connection.request = request
        session = HubConnection(
            connection=connection,
            hub_class=self.hub_class,
            methods=self.methods,
            options=self.options,
            lifetime=self.lifetime,
            user=user,
            clock=self.clock,
        )
        self.sessions[connection.connection_id] = session
        task = asyncio.get_running_loop().create_task(session.run())
        task.add_done_callback(lambda _: self.sessions.pop(connection.connection_id, None))
        self.track(task)

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to a background task and log its failure."""
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("connection task failed", exc_info=task.exception())

    def origin_allowed(self, origin: str) -> bool:
        return origin in self.options.allowed_origins
