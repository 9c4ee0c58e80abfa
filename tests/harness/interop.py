"""Processes for the SignalR interop tests: the example hub and Node scenario scripts.

The interop tests drive ``python -m examples.chat`` (a separate process, so a test can kill it and
start a new one on the same port) with real client libraries. Node scenario scripts in
``tests/signalr/interop`` speak line-delimited JSON on stdout: ``{"event": ...}`` lines while they run (a test
may answer some of them on stdin, e.g. after restarting the server) and one final ``{"result": ...}``.
Every wait is bounded by a timeout; nothing here sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, TextIO

from tests.harness.paths import ROOT, SIGNALR_CLIENTS
from tests.harness.redis_process import free_port

INTEROP_DIR = SIGNALR_CLIENTS
NODE_MODULES = INTEROP_DIR / "node_modules"
BROWSER_BUNDLE = NODE_MODULES / "@microsoft" / "signalr" / "dist" / "browser" / "signalr.js"
REPO_ROOT = ROOT
READY_PREFIX = "listening on "


def require_node_packages() -> str:
    """Return the ``node`` binary, or fail with the command that installs the clients."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed; run the README's test command, which installs it")
    if not (NODE_MODULES / "@microsoft" / "signalr").is_dir():
        raise RuntimeError(f"SignalR clients are missing; run `npm ci` in {INTEROP_DIR}")
    return node


class _LineReader:
    """Drain a child's text stream on a thread so its pipe never fills; lines arrive on a queue."""

    def __init__(self, stream: TextIO) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def _pump(self, stream: TextIO) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, deadline: float) -> str | None:
        """The next line, ``None`` at end of stream; raises ``TimeoutError`` at ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        try:
            line = self.lines.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError from None
        if line is not None:
            self.seen.append(line)
        return line


class ExampleServer:
    """``python -m examples.chat`` on a fixed loopback port; restartable on the same port.

    :param port: port to serve on; a free one when omitted.
    :param redis_url: use the Redis backplane at this URL.
    :param origins: browser origins to allow (``--origin``).
    """

    def __init__(self, port: int | None = None, redis_url: str | None = None, origins: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.redis_url = redis_url
        self.origins = origins
        self._proc: subprocess.Popen[str] | None = None
        self._reader: _LineReader | None = None
        self._log = tempfile.TemporaryFile(mode="w+", prefix="signalr-example-")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/chat"

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait for its ``listening on`` line."""
        args = [sys.executable, "-m", "examples.chat", "--port", str(self.port)]
        if self.redis_url:
            args += ["--redis", self.redis_url]
        for origin in self.origins:
            args += ["--origin", origin]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._log, text=True,
        )
        assert self._proc.stdout is not None
        reader = self._reader = _LineReader(self._proc.stdout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = reader.next_line(deadline)
            except TimeoutError:
                self.stop()
                raise RuntimeError(f"example server on {self.port} not ready in {timeout} s: {self.log()}") from None
            if line is None:
                code = self.stop()
                raise RuntimeError(f"example server exited with {code} before listening: {self.log()}")
            if line.startswith(READY_PREFIX):
                return

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful shutdown: Close with allowReconnect), then wait; kill if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise RuntimeError(f"example server on {self.port} ignored SIGTERM: {self.log()}") from None
        finally:
            if self._reader is not None:
                self._reader.join()
            if proc.stdout is not None:
                proc.stdout.close()

    def restart(self) -> None:
        """Stop, then start a new process on the same port."""
        self.stop()
        self.start()

    def log(self) -> str:
        """What the server wrote to stderr so far (for failure messages)."""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read()
        self._log.seek(0, os.SEEK_END)
        return text[-4000:]

    def close(self) -> None:
        self.stop()
        self._log.close()

    def __enter__(self) -> ExampleServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NodeScript:
    """A running ``tests/signalr/interop/<name>.mjs`` with JSON-lines output.

    :param name: script file name in ``tests/signalr/interop``.
    :param args: command-line arguments.
    :param timeout: overall budget in seconds; the process is killed when it runs out.
    """

    def __init__(self, name: str, *args: str, timeout: float = 60.0) -> None:
        node = require_node_packages()
        self._deadline = time.monotonic() + timeout
        self._stderr = tempfile.TemporaryFile(mode="w+", prefix="signalr-node-")
        self._proc = subprocess.Popen(
            [node, str(INTEROP_DIR / name), *args], cwd=INTEROP_DIR, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        assert self._proc.stdout is not None
        self._reader = _LineReader(self._proc.stdout)
        self.name = name

    def _next(self) -> dict[str, Any] | None:
        try:
            line = self._reader.next_line(self._deadline)
        except TimeoutError:
            self.kill()
            raise AssertionError(f"{self.name} timed out; output so far: {self._diagnostics()}") from None
        if line is None:
            return None
        try:
            return json.loads(line)
        except ValueError:
            raise AssertionError(f"{self.name} printed a non-JSON line {line!r}: {self._diagnostics()}") from None

    def expect_event(self, event: str) -> dict[str, Any]:
        """Wait for the ``{"event": event}`` line and return it."""
        while (message := self._next()) is not None:
            if message.get("event") == event:
                return message
            if "result" in message:
                break
        self.wait_exit()
        raise AssertionError(f"{self.name} ended without event {event!r}: {self._diagnostics()}")

    def tell(self, line: str) -> None:
        """Write one line to the script's stdin."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def result(self) -> Any:
        """Wait for the final result; fails if the script exits non-zero or without a result."""
        result: Any = None
        found = False
        while (message := self._next()) is not None:
            if "result" in message:
                result, found = message["result"], True
        code = self.wait_exit()
        if code != 0 or not found:
            raise AssertionError(f"{self.name} exited with {code}: {self._diagnostics()}")
        return result

    def wait_exit(self) -> int:
        try:
            return self._proc.wait(timeout=max(0.1, self._deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit: {self._diagnostics()}") from None

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=5)

    def _diagnostics(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return f"stdout={self._reader.seen[-20:]!r} stderr={self._stderr.read()[-4000:]!r}"

    def close(self) -> None:
        self.kill()
        self._reader.join()
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


def run_node(name: str, *args: str, timeout: float = 60.0) -> Any:
    """Run a scenario script to completion and return its result."""
    script = NodeScript(name, *args, timeout=timeout)
    try:
        return script.result()
    finally:
        script.close()


class StaticSite:
    """``browser.html`` and the official browser bundle, served by Tornado from a thread on several ports.

    Each port is a distinct browser origin (``http://127.0.0.1:<port>``), which is how the browser test
    gets a page from an allowed and one from a non-allowed origin.

    :param count: number of ports (origins) to serve the same files on.
    """

    def __init__(self, count: int = 2) -> None:
        self.ports = [free_port() for _ in range(count)]
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def origin(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def page(self, index: int) -> str:
        return f"{self.origin(index)}/browser.html"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to the starting thread
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        import tornado.web

        files = {"browser.html": INTEROP_DIR / "browser.html", "signalr.js": BROWSER_BUNDLE}

        class FileHandler(tornado.web.RequestHandler):
            def get(self, name: str) -> None:
                path = files.get(name)
                if path is None:
                    raise tornado.web.HTTPError(404)
                kind = "text/html" if name.endswith(".html") else "application/javascript"
                self.set_header("Content-Type", f"{kind}; charset=utf-8")
                self.finish(path.read_bytes())

        app = tornado.web.Application([(r"/([a-z.]+)", FileHandler)])
        servers = [app.listen(port, address="127.0.0.1") for port in self.ports]
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        for server in servers:
            server.stop()
            await server.close_all_connections()

    def start(self, timeout: float = 10.0) -> None:
        if not BROWSER_BUNDLE.is_file():
            raise RuntimeError(f"{BROWSER_BUNDLE} is missing; run `npm ci` in {INTEROP_DIR}")
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"static site did not start: {self._error!r}")

    def close(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> StaticSite:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
