"""Send (POST) and stop (DELETE) requests of the ``{hub}`` endpoint, with a bounded body.

A send's body is streamed in (the handler is a ``stream_request_body`` one), so one announced larger
than ``HubOptions.receive_unit_limit`` is refused with 413 from its headers, and a chunked one as soon
as it passes the limit, without reading the rest. The connection's send lock is taken before the
body is read: concurrent sends wait unread (ASP.NET serialises them too). A send is answered once
its bytes fit in the hub's inbox, so a client whose hub is busy waits for its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from tornado.iostream import StreamClosedError

from signalr.connections.connection import HttpConnection
from signalr.options import HttpTransportType
from signalr.tornado.base import HubRequestMixin, query_arguments

log = logging.getLogger("signalr.transport")


class SendRequests(HubRequestMixin):
    """POST and DELETE for :class:`~signalr.tornado.hub_handler.HubHandler`, and the ``id=`` lookup."""

    # A send: its connection, the body read so far, and the connection's send lock while held.
    _sending: HttpConnection | None = None
    _body: bytearray | None = None
    _post_lock: asyncio.Lock | None = None
    _request_gone = False

    def on_close(self) -> None:
        self._request_gone = True
        self._release_post()

    def _existing_connection(self) -> HttpConnection | None:
        """The ``id=`` connection of a POST or DELETE; None once a 400 or 404 has been answered."""
        return self._connection_of(query_arguments(self))

    def _connection_of(self, query: Mapping[str, str]) -> HttpConnection | None:
        """The connection named by ``id=``; None once a 400 (no id) or 404 (unknown id) has been answered."""
        token = query.get("id")
        if token is None:
            self._text(400, "Connection ID required")
            return None
        connection = self.server.connections.get(token)
        if connection is None:
            self._text(404, "No Connection with that ID")
        return connection

    async def prepare(self) -> None:
        """For a send: refuse a body announced too large, find the connection, then take its send
        lock before the body is read, so that concurrent sends wait unread (ASP.NET serialises them)."""
        if self.request.method != "POST":
            return
        limit = self.server.options.receive_unit_limit
        announced = self.request.headers.get("Content-Length", "")
        if limit is not None and announced.isdigit() and int(announced) > limit:
            return self._refuse_body(limit)
        connection = self._existing_connection()
        if connection is None:
            return None
        if connection.transport is HttpTransportType.WEBSOCKETS:
            return self._text(405, "POST requests are not allowed for WebSocket connections.")
        await connection.post_lock.acquire()
        self._post_lock = connection.post_lock
        if self._request_gone:
            return self._release_post()  # the client left while it waited for its turn
        self._sending, self._body = connection, bytearray()

    def data_received(self, chunk: bytes) -> None:
        body = self._body
        if body is None:
            return  # not a send, or one already answered: the rest is discarded
        limit = self.server.options.receive_unit_limit
        if limit is not None and len(body) + len(chunk) > limit:
            # A chunked body, whose size was not announced.
            self._body = None
            self._release_post()
            self._refuse_body(limit)
            return
        body += chunk

    def _refuse_body(self, limit: int) -> None:
        """413 without reading the body: Tornado closes the connection once the answer is written,
        since the request was not read to its end."""
        # Whatever Tornado still reads before then is discarded, never refused a second time.
        self.request.connection.set_max_body_size(1 << 62)  # type: ignore[union-attr]
        self._text(413, f"A send may carry at most {limit} bytes; send fewer messages at a time.")

    def _release_post(self) -> None:
        lock, self._post_lock = self._post_lock, None
        if lock is not None:
            lock.release()

    def on_finish(self) -> None:
        self._release_post()

    async def post(self, *args: Any) -> None:
        connection, body = self._sending, self._body
        if connection is None or body is None:
            return None  # answered by prepare() or data_received()
        try:
            inbox = connection.inbox
            inbox.feed(bytes(body))
            # Answered at once while the hub's inbox has room (signalrcore sends its handshake before
            # its first poll starts the hub); otherwise once the hub took the bytes.
            while (taken := inbox.until_below(inbox.limit)) is not None:
                await taken
        finally:
            self._release_post()
        self.set_status(200)
        with contextlib.suppress(StreamClosedError):
            self.finish()

    def delete(self, *args: Any) -> None:
        connection = self._existing_connection()
        if connection is None:
            return None
        if connection.transport is not HttpTransportType.LONG_POLLING:
            return self._text(400, "Cannot terminate this connection using the DELETE endpoint.")
        log.debug("DELETE terminates connection %s", connection.connection_id)
        self.server.connections.remove(connection)
        self.set_status(202)
        self.finish()
