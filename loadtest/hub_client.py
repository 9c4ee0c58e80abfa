"""A small SignalR client for Locust: the JSON hub protocol over WebSockets, on gevent.

Why our own and not signalrcore: signalrcore (1.0) sends keep-alive pings only when automatic reconnection
is configured, so without it a visitor that waits longer than the server's 30 s client timeout is dropped;
with it, every connection runs a checker thread that wakes ten times a second, which a load generator with
thousands of waiting visitors pays for in CPU. A waiting visitor needs little: negotiate, open the WebSocket,
shake hands, invoke ``Register``, receive a few invocations and send a ping every 15 s. Each connection here
is one reader greenlet and one pinger greenlet that sleeps between pings.

It runs under Locust's gevent (Locust patches sockets before the locustfile is imported, so
``websocket-client`` cooperates); ``HubConnection`` itself uses gevent's greenlets and events directly.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import gevent
import websocket
from gevent.event import AsyncResult

#: Ends every JSON hub protocol message.
RECORD_SEPARATOR = "\x1e"
#: Hub message types (the SignalR hub protocol).
INVOCATION, COMPLETION, PING, CLOSE = 1, 3, 6, 7
#: A ping this often keeps the server's client timeout (30 s by default) from closing an idle connection.
KEEPALIVE_SECONDS = 15.0


class HubError(Exception):
    """The hub refused something: the negotiate, the handshake, an invocation, or it closed the connection."""


def encode(message: dict[str, Any]) -> str:
    """One hub protocol message as a text frame's payload."""
    return json.dumps(message, separators=(",", ":")) + RECORD_SEPARATOR


def decode(payload: str | bytes) -> list[dict[str, Any]]:
    """The messages of one text frame (a frame may carry several records)."""
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8")
    return [json.loads(record) for record in payload.split(RECORD_SEPARATOR) if record]


def websocket_url(hub_url: str, connection_token: str) -> str:
    """``http(s)://host/sessionHub`` with the token as ``?id=``, on the ``ws(s)`` scheme."""
    parts = urlsplit(hub_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = (parts.query + "&" if parts.query else "") + "id=" + quote(connection_token, safe="")
    return urlunsplit((scheme, parts.netloc, parts.path, query, ""))


class HubConnection:
    """One connection to a SignalR hub.

    :param hub_url: the hub's HTTP URL, e.g. ``http://127.0.0.1:8080/sessionHub``.
    :param post: sends the negotiate request: called with the URL, returns a response with ``status_code``
        and ``json()`` (a Locust user passes its HTTP client, so the negotiate appears in Locust's stats).
    :param headers: extra headers for the WebSocket request (an ``Origin``, for instance); without one no
        ``Origin`` is sent, as from an app rather than a browser page.
    :param timeout: seconds for the WebSocket's connect and handshake.
    :param on_close: called once with a :class:`HubError` when the connection ends (not after :meth:`close`).
    """

    def __init__(self, hub_url: str, *, post: Callable[[str], Any], headers: dict[str, str] | None = None,
                 timeout: float = 10.0, on_close: Callable[[HubError], None] | None = None) -> None:
        self.hub_url = hub_url.rstrip("/")
        self._post = post
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._on_close = on_close
        self._handlers: dict[str, Callable[..., None]] = {}
        self._pending: dict[str, AsyncResult] = {}
        self._ids = itertools.count(1)
        self._socket: websocket.WebSocket | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._closed = False

    def on(self, target: str, handler: Callable[..., None]) -> None:
        """Call ``handler(*arguments)`` for each invocation of the client method ``target``."""
        self._handlers[target.lower()] = handler

    def connect(self) -> None:
        """Negotiate, open the WebSocket and complete the handshake; raises :class:`HubError` if refused."""
        token = self._negotiate()
        self._socket = websocket.create_connection(
            websocket_url(self.hub_url, token), timeout=self._timeout, header=self._headers,
            suppress_origin="Origin" not in self._headers)
        self._socket.send(encode({"protocol": "json", "version": 1}))
        # The handshake answer is the first record; the server may put messages right behind it.
        records = self._socket.recv().split(RECORD_SEPARATOR)
        answer = json.loads(records[0])
        if answer.get("error"):
            self._socket.close()
            raise HubError(f"handshake refused: {answer['error']}")
        self._socket.settimeout(None)  # from now on the reader waits as long as the hub is quiet
        for message in decode(RECORD_SEPARATOR.join(records[1:])):
            self._dispatch(message)
        self._greenlets = [gevent.spawn(self._read), gevent.spawn(self._keep_alive)]

    def _negotiate(self) -> str:
        response = self._post(self.hub_url + "/negotiate?negotiateVersion=1")
        if response.status_code != 200:
            raise HubError(f"negotiate answered {response.status_code}")
        body = response.json()
        if body.get("error"):
            raise HubError(f"negotiate refused: {body['error']}")
        if not any(t.get("transport") == "WebSockets" for t in body.get("availableTransports", [])):
            raise HubError("the hub does not offer WebSockets")
        # negotiateVersion 1 separates the connection's secret token from its public id.
        return body.get("connectionToken") or body["connectionId"]

    def invoke(self, method: str, *arguments: Any, timeout: float = 30.0) -> Any:
        """Call a hub method and return its result; a hub error raises :class:`HubError`."""
        invocation_id = str(next(self._ids))
        result = AsyncResult()
        self._pending[invocation_id] = result
        try:
            self._send({"type": INVOCATION, "invocationId": invocation_id, "target": method,
                        "arguments": list(arguments)})
            return result.get(timeout=timeout)
        except gevent.Timeout as exc:
            raise HubError(f"{method} got no answer in {timeout:g} s") from exc
        finally:
            self._pending.pop(invocation_id, None)

    def close(self) -> None:
        """Close the connection (the server then cleans up as for any client that goes away)."""
        if self._closed:
            return
        self._closed = True
        gevent.killall([g for g in self._greenlets if g is not gevent.getcurrent()], block=False)
        if self._socket is not None:
            try:
                self._socket.close()
            except (OSError, websocket.WebSocketException):
                pass  # already gone: closing is all that was wanted
        self._fail_pending(HubError("the connection was closed"))

    def _send(self, message: dict[str, Any]) -> None:
        if self._closed or self._socket is None:
            raise HubError("the connection is closed")
        try:
            self._socket.send(encode(message))
        except (OSError, websocket.WebSocketException) as exc:
            raise HubError(f"sending failed: {exc}") from exc

    def _keep_alive(self) -> None:
        while not self._closed:
            gevent.sleep(KEEPALIVE_SECONDS)
            try:
                self._send({"type": PING})
            except HubError:
                return  # the reader notices the end and reports it

    def _read(self) -> None:
        reason = HubError("the server closed the connection")
        try:
            while not self._closed:
                payload = self._socket.recv()
                if not payload:
                    break  # websocket-client returns an empty frame once the server's close frame arrived
                for message in decode(payload):
                    if message.get("type") == CLOSE:
                        raise HubError("the server closed the connection"
                                       + (f": {message['error']}" if message.get("error") else ""))
                    self._dispatch(message)
        except HubError as exc:
            reason = exc
        except (OSError, ValueError, websocket.WebSocketException) as exc:
            reason = HubError(f"the connection broke: {exc}")
        if self._closed:
            return
        self._closed = True
        self._fail_pending(reason)
        if self._on_close is not None:
            self._on_close(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == INVOCATION:
            handler = self._handlers.get(str(message.get("target", "")).lower())
            if handler is not None:
                handler(*message.get("arguments", []))
        elif kind == COMPLETION:
            pending = self._pending.get(str(message.get("invocationId")))
            if pending is None:
                return
            if message.get("error"):
                pending.set_exception(HubError(message["error"]))
            else:
                pending.set(message.get("result"))

    def _fail_pending(self, error: HubError) -> None:
        for pending in list(self._pending.values()):
            if not pending.ready():
                pending.set_exception(error)
