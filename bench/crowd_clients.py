"""The crowd's clients for ``bench_crowd.py``, spread over client processes.

One process cannot hold 20,000 client sockets here (the hard limit of open files is 20,000 per process,
and the servers need some too), and one event loop would also make the clients' own delay part of what
is measured. So the bench's parent starts ``--client-processes`` children of this module, gives each a
share of the request ids, and drives them with one JSON line per command on their stdin; each answers
one JSON line per command on its stdout, with the command's ``id``.

Every child is one asyncio loop of raw protocol clients (:class:`TokenClient`, no task per connection).
Times are ``time.perf_counter()``, which is ``CLOCK_MONOTONIC`` on Linux: the same clock in every process,
so the parent compares the children's arrival times with its own release times directly.

Commands (``op``), each answered once its work is done:

* ``open {clients: [[index, request id], ...], port, path}``: negotiate, open the WebSocket with the token,
  hand-shake and ``Register`` (not with an empty request id: then done once hand-shaken), a hundred at a
  time;
* ``expect {after}``: from now, every client with an index above ``after`` must get its position minus one;
* ``await_expected {timeout}``: wait for that; answers ``{missing, last}`` (the latest arrival time);
* ``ready {index}``: wait for that client's ``SessionReady``; answers ``[time, conversation id]``;
* ``ready_times {indexes, timeout}``: wait for all of theirs; answers their times;
* ``monotone``: whether every client's positions only ever fell;
* ``stalls {since}``: the moments since ``since`` when this child's event loop was held up for at least
  10 ms, as ``[start, seconds, collecting]`` (``collecting``: its garbage collector ran meanwhile): a child
  that holds thousands of clients handles every one's messages (after a release, thousands of positions)
  and collects their garbage in one loop, which no real visitor's browser does, and a message that arrives
  meanwhile is timed late;
* ``quit``: close every client and end.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import tornado.httpclient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_session_hub import Client  # noqa: E402

PING = json.dumps({"type": 6}) + "\x1e"
#: Seconds between a client's pings (the official clients' keepAliveIntervalInMilliseconds is 15 s; the hub
#: closes a connection silent for its client timeout, 30 s). Set by ``bench_crowd.py --client-ping-seconds``.
PING_SECONDS = float(os.environ.get("CROWD_PING_SECONDS", "15"))
#: "1": every client pings at the same instant (the bench's pattern before 7 Dec 2026, evening); otherwise
#: each keeps its own phase, as a crowd that arrived over time does.
PING_BURST = os.environ.get("CROWD_PING_BURST") == "1"
#: How often the spread pinger wakes up to ping the clients whose turn it is.
PING_TICK_SECONDS = 0.1
#: This process's collector pauses of at least ``GC_PAUSE_NOTED`` seconds: (start, seconds), the last 10,000.
GC_PAUSES: collections.deque[tuple[float, float]] = collections.deque(maxlen=10_000)
GC_PAUSE_NOTED = 0.002
_gc_started = 0.0
#: The loop's stalls: (start, seconds) when a probe due every ``STALL_PROBE`` s ran ``STALL_NOTED`` s late.
STALLS: collections.deque[tuple[float, float]] = collections.deque(maxlen=10_000)
STALL_PROBE = 0.005
STALL_NOTED = 0.010


async def watch_stalls() -> None:
    while True:
        due = time.perf_counter() + STALL_PROBE
        await asyncio.sleep(STALL_PROBE)
        late = time.perf_counter() - due
        if late >= STALL_NOTED:
            STALLS.append((due, late))


def stalls_since(since: float) -> list[list[Any]]:
    return [[start, seconds, any(g < start + seconds and g + d > start for g, d in GC_PAUSES)]
            for start, seconds in STALLS if start + seconds >= since]


def _note_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    now = time.perf_counter()
    if phase == "start":
        _gc_started = now
    elif now - _gc_started >= GC_PAUSE_NOTED:
        GC_PAUSES.append((_gc_started, now - _gc_started))


gc.callbacks.append(_note_gc)


class TokenClient(Client):
    """A waiting client that negotiates first and opens the WebSocket with its token (``?id=``), as the
    official clients do; the ``--processes`` front routes the socket to the worker that negotiated it."""

    token = ""

    def __init__(self, request_id: str, crowd: ClientCrowd) -> None:
        super().__init__(request_id, crowd.arrivals)
        self.crowd = crowd
        self.handshaken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Every position this client was told, in order (an update may come before the Register result).
        self.seen: list[int] = []
        #: The position the bench expects next (``expect``), or None.
        self.expected: int | None = None

    async def connect(self, host: str, port: int, path: str = "/sessionHub") -> None:  # type: ignore[override]
        """Open the WebSocket, hand-shake and (with a request id) ``Register``."""
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        assert self.transport is not None
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((f"GET {path}?id={self.token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                              "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await asyncio.wait_for(self._upgraded, 60)
        self.send(json.dumps({"protocol": "json", "version": 1}) + "\x1e")
        if not self.request_id:
            await asyncio.wait_for(self.handshaken, 60)
            return
        self.send(json.dumps({"type": 1, "invocationId": "1", "target": "Register",
                              "arguments": [self.request_id]}) + "\x1e")
        result = await asyncio.wait_for(self.registered, 60)
        if not self.seen:  # no update overtook the Register result
            self.position = result["queuePosition"]
            self.seen.append(self.position)

    def _on_text(self, text: str, now: float) -> None:
        if not self.handshaken.done() and "\x1e" in text:
            self.handshaken.set_result(None)  # the handshake response comes first
        before = self.position
        super()._on_text(text, now)
        if self.position != before:
            self.seen.append(self.position)
            if self.expected is not None and self.position == self.expected:
                self.expected = None
                self.crowd.arrived()


class ClientCrowd:
    """This child's share of the crowd, and the commands the parent sends it."""

    def __init__(self) -> None:
        self.clients: dict[int, TokenClient] = {}
        self.arrivals: list[float] = []
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=100)
        self._waiting_for = 0
        self._all_arrived: asyncio.Future[None] | None = None
        self._rest: list[TokenClient] = []
        #: (when, client) of each registered client's next Ping, soonest first.
        self._pings_due: collections.deque[tuple[float, TokenClient]] = collections.deque()

    def arrived(self) -> None:
        self._waiting_for -= 1
        if self._waiting_for == 0 and self._all_arrived is not None and not self._all_arrived.done():
            self._all_arrived.set_result(None)

    async def keep_alive(self) -> None:
        """Ping every registered client once per ``PING_SECONDS``, as real clients do (a crowd's set-up
        alone takes longer than the hub's client timeout): each from its own registration on, so the
        Pings are spread as a crowd that arrived over time spreads them, unless ``PING_BURST``."""
        if PING_BURST:
            while True:
                await asyncio.sleep(PING_SECONDS)
                for client in self.clients.values():
                    if client.transport is not None and client.registered.done():
                        client.send(PING)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PING_TICK_SECONDS)
            now = loop.time()
            # In due order: every client has the same interval, so the queue stays sorted.
            while self._pings_due and self._pings_due[0][0] <= now:
                due, client = self._pings_due.popleft()
                if client.transport is not None:
                    client.send(PING)
                    self._pings_due.append((due + PING_SECONDS, client))

    def _pings_from_now(self, client: TokenClient) -> None:
        if not PING_BURST:
            self._pings_due.append((asyncio.get_running_loop().time() + PING_SECONDS, client))

    async def open(self, clients: list[list[Any]], port: int, path: str = "/sessionHub") -> None:
        base = f"http://127.0.0.1:{port}"

        async def one(client: TokenClient) -> None:
            response = await self.http.fetch(f"{base}{path}/negotiate?negotiateVersion=1", method="POST",
                                             body=b"", request_timeout=120)
            client.token = json.loads(response.body)["connectionToken"]
            await client.connect("127.0.0.1", port, path)

        fresh = []
        for index, request_id in clients:
            client = TokenClient(request_id, self)
            client.registered.add_done_callback(
                lambda f, c=client: None if f.cancelled() or f.exception() else self._pings_from_now(c))
            fresh.append(client)
            self.clients[index] = client
        for start in range(0, len(fresh), 100):
            await asyncio.gather(*(one(c) for c in fresh[start:start + 100]))

    def expect(self, after: int) -> None:
        self._all_arrived = asyncio.get_running_loop().create_future()
        self._rest = [client for index, client in self.clients.items() if index > after]
        self._waiting_for = len(self._rest)
        for client in self._rest:
            client.expected = client.position - 1
        if not self._waiting_for:
            self._all_arrived.set_result(None)

    async def await_expected(self, timeout: float) -> dict[str, Any]:
        assert self._all_arrived is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._all_arrived), timeout)
        except TimeoutError:
            pass
        missing = sum(1 for c in self._rest if c.expected is not None)
        last = max((c.position_at for c in self._rest), default=0.0)
        for client in self._rest:
            client.expected = None
        return {"missing": missing, "last": last}

    async def ready(self, index: int) -> list[Any]:
        client = self.clients[index]
        return [await asyncio.wait_for(client.ready, 60), client.conversation]

    async def ready_times(self, indexes: list[int], timeout: float) -> list[float]:
        futures = [self.clients[i].ready for i in indexes]
        return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))

    def monotone(self) -> bool:
        return all(all(a > b for a, b in zip(c.seen, c.seen[1:])) for c in self.clients.values())

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.http.close()


async def serve_commands() -> None:
    """The child's main loop: one JSON command a line on stdin, one JSON answer a line on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    crowd = ClientCrowd()
    pinger = asyncio.ensure_future(crowd.keep_alive())
    stall_watch = asyncio.ensure_future(watch_stalls())
    running: set[asyncio.Task[None]] = set()

    def answer(command_id: int, result: Any = None, error: str | None = None) -> None:
        sys.stdout.write(json.dumps({"id": command_id, "result": result, "error": error}) + "\n")
        sys.stdout.flush()

    async def run(command: dict[str, Any]) -> None:
        op = command["op"]
        try:
            if op == "open":
                result: Any = await crowd.open(command["clients"], command["port"], command.get("path", "/sessionHub"))
            elif op == "expect":
                result = crowd.expect(command["after"])
            elif op == "await_expected":
                result = await crowd.await_expected(command["timeout"])
            elif op == "ready":
                result = await crowd.ready(command["index"])
            elif op == "ready_times":
                result = await crowd.ready_times(command["indexes"], command["timeout"])
            elif op == "monotone":
                result = crowd.monotone()
            elif op == "stalls":
                result = stalls_since(command["since"])
            else:
                raise ValueError(f"unknown command {op!r}")
        except Exception as exc:  # noqa: BLE001 - the parent reports it and stops the run
            answer(command["id"], error=f"{type(exc).__name__}: {exc}")
        else:
            answer(command["id"], result)

    try:
        while line := await reader.readline():
            command = json.loads(line)
            if command["op"] == "quit":
                break
            task = asyncio.ensure_future(run(command))
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        pinger.cancel()
        stall_watch.cancel()
        for task in running:
            task.cancel()
        crowd.close()
    answer(-1, "bye")


class ClientProcess:
    """The parent's handle on one child: sends commands, matches their answers."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._next = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls) -> ClientProcess:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                                         os.environ.get("PYTHONPATH")]))}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env, limit=64 * 1024 * 1024)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            future = self._pending.pop(message["id"], None)
            if future is None or future.done():
                continue
            if message["error"]:
                future.set_exception(RuntimeError(f"client process {self.proc.pid}: {message['error']}"))
            else:
                future.set_result(message["result"])
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError(f"client process {self.proc.pid} ended"))

    async def call(self, op: str, **fields: Any) -> Any:
        assert self.proc.stdin is not None
        self._next += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        self.proc.stdin.write((json.dumps({"id": self._next, "op": op, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        return await future

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        if self.proc.returncode is None:
            self.proc.stdin.write(b'{"id": 0, "op": "quit"}\n')
            try:
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 30)
            except (OSError, TimeoutError):
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()


def raise_open_files(needed: int) -> None:
    """Raise this process's open-file limit to ``needed`` (its children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        try:  # above the hard limit only with the privilege to raise it
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(needed, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


if __name__ == "__main__":
    raise_open_files(3 * 8000)
    asyncio.run(serve_commands())
