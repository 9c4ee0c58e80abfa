"""A real ``redis-server`` child process for tests.

Tests talk to a real Redis (never a mock) for anything involving Lua or pub/sub. Each
:class:`RedisProcess` owns one server on a free loopback port and can be stopped and started again on
the same port to simulate an outage, or frozen (:meth:`RedisProcess.pause`) to simulate a hung server.
By default nothing is persisted, so a restart is a clean server; with ``persistent=True`` every write
goes to an append-only file synced on each command, so a restart keeps everything acknowledged before
the stop (what a production Redis with ``appendfsync always`` guarantees).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Self

import redis


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisProcess:
    """One ``redis-server`` on 127.0.0.1.

    :param port: the port to listen on; a free one when ``None``.
    :param persistent: keep data across :meth:`stop`/:meth:`start` (AOF, ``appendfsync always``) in this
        object's private directory; ``False`` (the default) switches all persistence off.
    """

    def __init__(self, port: int | None = None, *, persistent: bool = False, launcher: Sequence[str] = (),
                 extra_args: Sequence[str] = (), probe_timeout: float = 0.2) -> None:
        """:param launcher: a command the server runs under (a benchmark uses valgrind); none by default.
        :param extra_args: more ``redis-server`` options.
        :param probe_timeout: how long one start-up PING may take (longer under a slow launcher)."""
        self.port = port or free_port()
        self.persistent = persistent
        self._launcher = tuple(launcher)
        self._extra_args = tuple(extra_args)
        self._probe_timeout = probe_timeout
        self._dir = tempfile.mkdtemp(prefix="iqra-redis-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def _persistence_args(self) -> list[str]:
        if self.persistent:
            return ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        return ["--save", "", "--appendonly", "no"]

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run the README's test command, which installs it")
        self._proc = subprocess.Popen(
            [*self._launcher, binary, "--port", str(self.port), "--bind", "127.0.0.1", *self._persistence_args(),
             "--dir", self._dir, "--loglevel", "warning", *self._extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait until the port answers PING (after loading the AOF, when persistent); a process poll,
        # not a fixed sleep.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=self._probe_timeout) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing is answered, like a hung host."""
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("redis-server is not running")
        self._proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT); it answers what was sent meanwhile."""
        if self._proc is not None and self._paused:
            self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crashed host: no shutdown, no final write, sockets reset."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        self._paused = False

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self.resume()  # a stopped process would not act on SIGTERM
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self._paused = False

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class Deployment:
    """Processes a test starts together (Sentinel, Cluster): ``start()`` them, ``close()`` them all."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[Self]:
        """A started deployment, closed on leaving (also when starting failed half-way)."""
        deployment = cls()
        try:
            deployment.start()
            yield deployment
        finally:
            deployment.close()


def wait_until(condition: Callable[[], object], what: str, timeout: float) -> None:
    """Return once ``condition()`` is true, polling every 50 ms; a Redis or socket error counts as not yet
    (a node restarting, a failover under way). :raises TimeoutError: naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not happen within {timeout} s")
