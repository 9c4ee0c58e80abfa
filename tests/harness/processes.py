"""Gateway processes started the way an operator starts them (``python -m gateway ...``), watched from a test.

Nothing here sleeps for a fixed time except where another process gives no event to wait on (a port that
is not listening yet); those waits poll briefly and are bounded.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tests.harness.paths import ROOT

#: Longest a ``python -m gateway`` child may take to log its ready line.
START_TIMEOUT = 30


class ChildProcess:
    """A child whose output is read continuously (a full pipe would block it) and kept in ``lines``."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[str] = []
        self._waiters: list[tuple[str, asyncio.Future[None]]] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def gateway(cls, name: str, *args: str, ready: str) -> ChildProcess:
        """``python -m gateway *args``, returned once it has logged a line containing ``ready``.

        :raises AssertionError: it did not (its last lines are in the message); it is stopped.
        """
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        child = cls(name, proc)
        try:
            await asyncio.wait_for(child.line_containing(ready), START_TIMEOUT)
        except (TimeoutError, EOFError):
            await child.stop()
            raise AssertionError(f"{name} did not log {ready!r}:\n" + "\n".join(child.lines[-30:])) from None
        return child

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            for needle, future in self._waiters:
                if needle in line and not future.done():
                    future.set_result(None)
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(EOFError(f"{self.name} exited:\n" + "\n".join(self.lines[-30:])))

    def line_containing(self, needle: str) -> asyncio.Future[None]:
        """Resolved once a line containing ``needle`` was written; fails with EOFError if none ever is."""
        future = asyncio.get_running_loop().create_future()
        if any(needle in line for line in self.lines):
            future.set_result(None)
        else:
            self._waiters.append((needle, future))
        return future

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still running 15 s later; its output is read to the end."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


def serve_two_workers(config_path: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m gateway serve --processes 2`` on 127.0.0.1:``port``, warnings and worse logged to ``log_path``."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "--log-level", "warning", "serve", "--config", str(config_path),
             "--host", "127.0.0.1", "--port", str(port), "--processes", "2"],
            stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def wait_healthy(http: AsyncHTTPClient, url: str, proc: subprocess.Popen) -> None:
    """Until ``url``'s ``/healthz`` answers 200; fails if ``proc`` exits first or it never answers."""
    for _ in range(200):
        assert proc.poll() is None, "the gateway exited during start-up"
        try:
            response = await http.fetch(url + "/healthz", raise_error=False, request_timeout=1)
            if response.code == 200:
                return
        except (OSError, HTTPClientError):  # refused, or too slow to answer yet on a busy machine
            pass
        await asyncio.sleep(0.05)  # polling a starting subprocess: there is no event to wait on
    raise AssertionError("the gateway did not become healthy")


def worker_pids(supervisor: int) -> list[int]:
    """The process ids of the children of ``serve --processes`` (its workers), oldest first."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [int(pid) for pid in children]


def terminate(proc: subprocess.Popen, timeout: float = 20) -> int:
    """SIGTERM (if still running), then SIGKILL after ``timeout`` s; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
