"""``serve --processes N``: N worker processes behind one port.

Why not ``SO_REUSEPORT`` or a shared listening socket: SignalR clients negotiate on one HTTP request
and then connect (or poll, or post) with ``id=<token>`` on others, and only the worker that created the
token knows the connection. The kernel would spread those requests over all workers. So the parent
process accepts every TCP connection, peeks at its request line (without consuming it) and hands the
socket to a worker over a Unix socket (``SCM_RIGHTS``): to the worker named by the token's prefix
(each worker prefixes its tokens with ``"<index>."``, :func:`signalr.ids.set_token_prefix`), otherwise
round-robin. Workers close hub requests' connections after the response, so a browser's keep-alive
connection is never reused for a hub request that belongs to another worker.

The parent restarts a worker that dies and forwards SIGTERM/SIGINT to all of them. Queue state,
presence and the SignalR backplane are in Redis, so the workers behave as one gateway.
"""

from __future__ import annotations

import logging
import os
import re
import selectors
import signal
import socket
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("gateway.processes")

PEEK_BYTES = 4096
_TOKEN_WORKER = re.compile(r"^(\d+)\.")


def token_prefix(index: int) -> str:
    """The connection-token prefix of worker ``index``."""
    return f"{index}."


def worker_for(head: bytes, workers: int) -> int | None:
    """The worker that must serve a request, from the first bytes of its connection, or ``None`` (any).

    :param head: the start of the request (at least its request line, when the client sent it).
    """
    line, _, _ = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    query = urlsplit(parts[1].decode("latin-1")).query
    for token in parse_qs(query).get("id", ()):
        match = _TOKEN_WORKER.match(token)
        if match is not None and int(match.group(1)) < workers:
            return int(match.group(1))
    return None


WorkerMain = Callable[[int, socket.socket], int]


class Supervisor:
    """The parent process: accepts, routes sockets to workers, restarts dead workers.

    :param listener: the bound, listening socket.
    :param count: number of workers.
    :param worker_main: runs in each forked child with ``(index, channel)``; returns its exit code.
        It receives client sockets on ``channel`` with :func:`receive_socket`.
    """

    def __init__(self, listener: socket.socket, count: int, worker_main: WorkerMain) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self._listener = listener
        self._count = count
        self._main = worker_main
        self._channels: dict[int, socket.socket] = {}
        self._pids: dict[int, int] = {}
        self._stopping = False
        self._next = 0

    def _spawn(self, index: int) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                parent_end.close()
                self._listener.close()
                for other in self._channels.values():
                    other.close()
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
            old.close()
        self._channels[index] = parent_end
        self._pids[pid] = index
        log.info("worker %d started (pid %d)", index, pid)

    def _stop(self, *_: object) -> None:
        self._stopping = True

    def run(self) -> int:
        for index in range(self._count):
            self._spawn(index)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        selector = selectors.DefaultSelector()
        self._listener.setblocking(False)
        selector.register(self._listener, selectors.EVENT_READ, None)
        pending: dict[socket.socket, float] = {}
        try:
            while not self._stopping:
                for key, _ in selector.select(timeout=0.5):
                    if key.data is None:
                        self._accept(selector, pending)
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

    def _accept(self, selector: selectors.BaseSelector, pending: dict[socket.socket, float]) -> None:
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        selector.register(conn, selectors.EVENT_READ, "client")
        pending[conn] = time.monotonic() + 5.0

    def _route(self, conn: socket.socket) -> None:
        try:
            head = conn.recv(PEEK_BYTES, socket.MSG_PEEK)
        except OSError:
            conn.close()
            return
        if not head:
            conn.close()
            return
        worker = worker_for(head, self._count)
        self._hand(conn, self._round_robin() if worker is None else worker)

    def _round_robin(self) -> int:
        self._next = (self._next + 1) % self._count
        return self._next

    def _hand(self, conn: socket.socket, index: int) -> None:
        try:
            socket.send_fds(self._channels[index], [b"c"], [conn.fileno()])
        except OSError as exc:
            log.warning("could not hand a connection to worker %d: %s", index, exc)
        finally:
            conn.close()

    def _reap_children(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self._pids.pop(pid, None)
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


def receive_socket(channel: socket.socket) -> list[socket.socket]:
    """Client sockets the supervisor sent on ``channel`` (non-blocking channel: may return [])."""
    try:
        data, fds, _, _ = socket.recv_fds(channel, 64, 16)
    except (BlockingIOError, InterruptedError):
        return []
    if not data and not fds:
        raise EOFError("the supervisor closed the channel")
    return [socket.socket(fileno=fd) for fd in fds]
