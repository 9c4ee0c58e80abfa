"""``serve --processes N``: N worker processes behind one port.

Why not ``SO_REUSEPORT`` or a shared listening socket: SignalR clients negotiate on one HTTP request
and then connect (or poll, or post) with ``id=<token>`` on others, and only the worker that created the
token knows the connection. The kernel would spread those requests over all workers. So the parent
process accepts every TCP connection, peeks at its request line (without consuming it) and hands the
socket to a worker over a Unix socket (``SCM_RIGHTS``): to the worker named by the token's prefix
(each worker starts its connection ids and tokens with ``"<index>."``, ``HubOptions.connection_id_prefix``,
so negotiate version 0 clients, whose id is their token, are routed too), otherwise round-robin. With
``Instance.Id`` set, the instance's id comes first (``"gw1.0."``): a load balancer in front of several
hosts routes on it, and the supervisor looks past it at the worker index.

That routes the first request of a TCP connection only. Later requests on a kept-alive connection
(browsers, ``requests.Session``, connection pools, reverse proxies that pool upstream connections, HTTP
pipelining) reach the worker that holds the socket, whatever connection they name. So a worker that
reads the head of a request naming another worker's connection stops parsing it, and hands the socket
over, together with every byte it has read but not served (the request head, re-serialised, and what
its buffer holds after it: the body, pipelined requests), to the owner via the parent; the owner serves
those bytes first, as if it had just read them (:mod:`gateway.cli.handover`). Requests are served in the
order they came, and a hand-over happens only after the previous response was written, so pipelining
stays safe. The bytes travel in a ``memfd`` passed with the socket, so no size limit of a Unix
datagram applies and each hand-over is one message (never interleaved with another).

The alternative, closing every connection after each response so that the parent routes every request,
is simpler but costs a TCP handshake per request (and a proxy's upstream pool) for everyone, to serve
the few requests that name another worker's connection; a hand-over costs only those few.

An ``id=`` that names no worker (no prefix, an index with no worker, skip-negotiation WebSockets that
carry no id) is served where it lands: an unknown id is 404 on any worker, and a connection created
without negotiate lives on the worker that created it.

The parent restarts a worker that dies and forwards SIGTERM/SIGINT to all of them. Queue state,
presence and the SignalR backplane are in Redis, so the workers behave as one gateway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

log = logging.getLogger("gateway.cli.supervisor")

PEEK_BYTES = 4096
#: The worker index at the start of a connection id or token: ASCII digits only (``\d`` would take
#: other scripts' digits), few enough that no client can make us parse a huge number.
_TOKEN_WORKER = re.compile(r"([0-9]{1,6})\.", re.ASCII)
#: Channel messages: a connection the parent accepted; a connection handed over with unread bytes.
FRESH = b"c"
HANDED = b"h"
#: Most connections accepted in one wake-up of the parent.
ACCEPT_BATCH = 64
#: The most a hand-over may carry: a request head at Tornado's limit plus one read chunk, with room.
MAX_HANDOVER_BYTES = 1024 * 1024


def token_prefix(index: int) -> str:
    """The connection id and token prefix of worker ``index``."""
    return f"{index}."


def owner_of(target: str, workers: int, instance_prefix: str = "") -> int | None:
    """The worker holding the SignalR connection a request names in ``id=``, or ``None`` (any worker).

    The id is chosen the way the hub reads it (keys in any case, the last value), so the routing and
    the lookup never disagree about which connection a request names.

    :param target: the request target (``/sessionHub?id=...``).
    :param instance_prefix: what this instance's tokens start with before the worker index
        (``"gw1."``, from ``Instance.Id``); a token without it is not this instance's (any worker: 404).
    """
    query = target.partition("?")[2]  # a request target has no fragment
    if "id=" not in query.lower():  # the common case: nothing to parse
        return None
    token = None
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key.lower() == "id" and values:
            token = values[-1]
    if token is None or not token.startswith(instance_prefix):
        return None
    match = _TOKEN_WORKER.match(token, len(instance_prefix))
    if match is None or int(match.group(1)) >= workers:
        return None
    return int(match.group(1))


def worker_for(head: bytes, workers: int, instance_prefix: str = "") -> int | None:
    """The worker that must serve a request, from the first bytes of its connection, or ``None`` (any).

    :param head: the start of the request (at least its request line, when the client sent it).
    :param instance_prefix: as for :func:`owner_of`.
    """
    line, _, _ = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    return owner_of(parts[1].decode("latin-1"), workers, instance_prefix)


@dataclass(frozen=True, slots=True)
class Arrival:
    """A client connection for this worker, and the bytes already read from it elsewhere (to serve first)."""

    sock: socket.socket
    unread: bytes = b""


WorkerMain = Callable[[int, socket.socket], int]

# What the parent's selector watches (its ``data`` tag).
_LISTENER, _CLIENT, _CHANNEL = "listener", "client", "channel"


class Supervisor:
    """The parent process: accepts, routes sockets to workers, relays hand-overs, restarts dead workers.

    :param listener: the bound, listening socket.
    :param count: number of workers.
    :param worker_main: runs in each forked child with ``(index, channel)``; returns its exit code.
        It receives client connections on ``channel`` with :func:`receive` and hands requests to its
        siblings with :func:`hand_over`.
    :param on_worker_exit: called with the pid of each worker that ended (its per-process metrics go).
    :param instance_prefix: what the workers' tokens start with before their index (``Instance.Id``).
    """

    def __init__(self, listener: socket.socket, count: int, worker_main: WorkerMain,
                 on_worker_exit: Callable[[int], None] | None = None, instance_prefix: str = "") -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self._on_exit = on_worker_exit
        self._instance_prefix = instance_prefix
        self._listener = listener
        self._count = count
        self._main = worker_main
        self._channels: dict[int, socket.socket] = {}
        self._pids: dict[int, int] = {}
        self._stopping = False
        self._next = 0
        self._selector = selectors.DefaultSelector()
        # Accepted connections whose first bytes have not arrived yet, with the time to stop waiting.
        self._pending: dict[socket.socket, float] = {}

    def _spawn(self, index: int) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                # Nothing of the parent's stays open here: a client socket kept by a worker that
                # does not serve it would never be closed.
                parent_end.close()
                self._listener.close()
                self._selector.close()
                for inherited in (*self._channels.values(), *self._pending):
                    inherited.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = self._main(index, child_end)
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's loop
                log.exception("worker %d crashed", index)
            finally:
                os._exit(code)
        child_end.close()
        old = self._channels.pop(index, None)
        if old is not None:
            self._forget(old)
        self._channels[index] = parent_end
        self._selector.register(parent_end, selectors.EVENT_READ, (_CHANNEL, index))
        self._pids[pid] = index
        log.info("worker %d started (pid %d)", index, pid)

    def _forget(self, channel: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):  # already unregistered when the worker died
            self._selector.unregister(channel)
        channel.close()

    def _stop(self, *_: object) -> None:
        self._stopping = True

    def run(self) -> int:
        for index in range(self._count):
            self._spawn(index)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        selector = self._selector
        self._listener.setblocking(False)
        selector.register(self._listener, selectors.EVENT_READ, (_LISTENER, None))
        pending = self._pending
        try:
            while not self._stopping:
                for key, _ in selector.select(timeout=0.5):
                    kind, index = key.data
                    if kind == _LISTENER:
                        self._accept()
                    elif kind == _CHANNEL:
                        self._relay(key.fileobj, index)  # type: ignore[arg-type]
                    else:
                        selector.unregister(key.fileobj)
                        pending.pop(key.fileobj, None)  # type: ignore[call-overload]
                        self._route(key.fileobj)  # type: ignore[arg-type]
                now = time.monotonic()
                for conn, deadline in list(pending.items()):
                    if now > deadline:  # connected but silent: any worker can time it out
                        selector.unregister(conn)
                        del pending[conn]
                        self._hand(conn, self._round_robin())
                self._reap_children()
        finally:
            selector.close()
            self._listener.close()
            self._shutdown()
        return 0

    def _accept(self) -> None:
        # A crowd connects faster than one wake-up per connection: take what the backlog holds (a
        # bounded batch, so relays and reaping still get their turn).
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: the next wake-up tries again
                log.warning("could not accept a connection: %s", exc)
                return
            # A client's first bytes are often there already (it writes right after connecting, and
            # the accept came later): routed now, without a round through the selector for them.
            try:
                head = conn.recv(PEEK_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                self._selector.register(conn, selectors.EVENT_READ, (_CLIENT, None))
                self._pending[conn] = time.monotonic() + 5.0
                continue
            except OSError:
                conn.close()
                continue
            self._route_head(conn, head)

    def _route(self, conn: socket.socket) -> None:
        try:
            head = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        except OSError:
            conn.close()
            return
        self._route_head(conn, head)

    def _route_head(self, conn: socket.socket, head: bytes) -> None:
        if not head:
            conn.close()
            return
        worker = worker_for(head, self._count, self._instance_prefix)
        self._hand(conn, self._round_robin() if worker is None else worker)

    def _round_robin(self) -> int:
        self._next = (self._next + 1) % self._count
        return self._next

    def _hand(self, conn: socket.socket, index: int) -> None:
        try:
            socket.send_fds(self._channels[index], [FRESH], [conn.fileno()])
        except OSError as exc:
            log.warning("could not hand a connection to worker %d: %s", index, exc)
        finally:
            conn.close()

    def _relay(self, channel: socket.socket, sender: int) -> None:
        """Pass a hand-over from worker ``sender`` on to the worker it names."""
        try:
            data, fds, flags, _ = socket.recv_fds(channel, 64, 2)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds, flags = b"", [], 0
        if not data and not fds:  # the worker is gone; _reap_children starts another
            self._selector.unregister(channel)
            return
        try:
            target = int(data[len(HANDED):]) if data.startswith(HANDED) else -1
            if len(fds) != 2 or flags & socket.MSG_CTRUNC or target not in self._channels:
                log.warning("worker %d sent a hand-over the parent cannot use (%r); dropping it", sender, data)
                return
            socket.send_fds(self._channels[target], [HANDED], fds)
        except (OSError, ValueError) as exc:
            log.warning("could not pass a connection from worker %d on: %s", sender, exc)
        finally:
            for fd in fds:
                os.close(fd)

    def _reap_children(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self._pids.pop(pid, None)
            if index is not None and self._on_exit is not None:
                self._on_exit(pid)
            if index is not None and not self._stopping:
                log.error("worker %d (pid %d) exited with status %d; restarting it", index, pid, status)
                self._spawn(index)

    def _shutdown(self) -> None:
        for pid in list(self._pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self._pids.pop(pid, None)
        deadline = time.monotonic() + 30
        while self._pids and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
                continue
            self._pids.pop(pid, None)
        for pid in self._pids:
            os.kill(pid, signal.SIGKILL)
        for channel in self._channels.values():
            channel.close()


# -- the worker's end of its channel -------------------------------------------------------------------


def receive(channel: socket.socket) -> list[Arrival]:
    """Connections the parent sent on ``channel`` (non-blocking: may return []).

    :raises EOFError: the parent closed the channel.
    """
    try:
        data, fds, flags, _ = socket.recv_fds(channel, 64, 2)
    except (BlockingIOError, InterruptedError):
        return []
    if not data and not fds:
        raise EOFError("the supervisor closed the channel")
    expected = {FRESH: 1, HANDED: 2}.get(data)
    if flags & socket.MSG_CTRUNC or len(fds) != expected:
        for fd in fds:
            os.close(fd)
        log.warning("the parent sent a message the worker cannot use (%r); dropping it", data)
        return []
    sock = socket.socket(fileno=fds[0])
    if data != HANDED:
        return [Arrival(sock)]
    try:
        size = os.fstat(fds[1]).st_size
        if size > MAX_HANDOVER_BYTES:  # a sibling never sends this much; refuse rather than allocate
            raise ValueError(f"{size} bytes")
        unread = os.pread(fds[1], size, 0)
    except (OSError, ValueError) as exc:
        log.warning("could not read a handed-over request: %s; closing its connection", exc)
        sock.close()
        return []
    finally:
        os.close(fds[1])
    return [Arrival(sock, unread)]


def hand_over(channel: socket.socket, sock: socket.socket, unread: bytes, owner: int) -> None:
    """Send ``sock`` with the bytes already read from it to worker ``owner`` (via the parent).

    :raises OSError: the parent could not take it now (the caller closes the connection).
    """
    if len(unread) > MAX_HANDOVER_BYTES:
        raise OSError(f"a request of {len(unread)} bytes is too large to hand over")
    data = os.memfd_create("iqra-handover", os.MFD_CLOEXEC)
    try:
        view = memoryview(unread)
        while view:
            view = view[os.write(data, view):]
        socket.send_fds(channel, [HANDED + str(owner).encode()], [sock.fileno(), data])
    finally:
        os.close(data)
