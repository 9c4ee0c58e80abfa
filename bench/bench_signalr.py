"""SignalR server benchmark: our ``signalr`` hub against ``aiosignalr``, side by side in one run.

Run it from the checkout root::

    .venv/bin/python bench/bench_signalr.py                      # 5,000 connections, 3 repetitions
    .venv/bin/python bench/bench_signalr.py --connections 20 --duration 0.5 --repeat 1   # smoke scale

Both servers serve the same chat hub at ``/chat`` (``python -m examples.chat`` and
``bench/aiosignalr_server.py``), each in its own process, started afresh for every phase of every
repetition; the repetitions alternate which server goes first. One client process
(``bench/signalr_client.py``) drives both. Measured, per server:

* memory per idle WebSocket connection: ``VmRSS`` of the server after N negotiated, handshaken,
  idle connections minus ``VmRSS`` before them (taken after a warm-up), divided by N;
* broadcast delivery: the time from the invoking client writing ``Broadcast`` to the last (and the
  median) of the N connections receiving ``Message``, every arrival stamped with ``perf_counter``
  in this process; the first broadcast of a run is a warm-up and is not counted;
* invocation round trips: K connections each calling ``Echo`` in a closed loop for D seconds after
  a warm-up, giving invocations/s and latency p50/p99, plus the CPU share each process used, which
  shows whether the server (not this client) was the bottleneck.

Server CPU time per broadcast and per Echo (from ``/proc/PID/stat``) is reported too: on a shared
machine wall-clock figures swing with the neighbours' load, CPU time per operation much less.
Each figure is the median over the repetitions (over every counted broadcast for broadcast figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from signalr_client import HubClient, Negotiator, connect  # noqa: E402

HOST = "127.0.0.1"
HUB_PATH = "/chat"
SERVERS: dict[str, list[str]] = {
    "ours": [sys.executable, "-m", "examples.chat"],
    "aiosignalr": [sys.executable, str(BENCH / "aiosignalr_server.py")],
}
ECHO_PAYLOAD = "hello"
MEMORY_TARGET_RATIO = 1.0
INVOKE_TARGET_RATIO = 1.0
BROADCAST_TARGET_MS = 1000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchConfig:
    """What to run; defaults are the issue's scale.

    :param connections: idle connections for the memory and broadcast phase.
    :param invoke_connections: closed-loop callers in the invocation phase.
    :param duration: measured seconds of the invocation phase.
    :param warmup: unmeasured seconds of invocations before it.
    :param broadcasts: counted broadcasts per repetition (one more is sent first as a warm-up).
    :param repeat: repetitions; figures are medians over them.
    :param servers: which servers to run, by name in :data:`SERVERS`.
    :param connect_concurrency: connection attempts in flight (below both servers' listen backlog).
    :param timeout: limit for any single wait (server start, connect, broadcast delivery).
    """

    connections: int = 5000
    invoke_connections: int = 50
    duration: float = 5.0
    warmup: float = 1.0
    broadcasts: int = 5
    repeat: int = 3
    servers: tuple[str, ...] = ("ours", "aiosignalr")
    connect_concurrency: int = 100
    timeout: float = 60.0


@dataclass(slots=True, kw_only=True)
class ServerFigures:
    """Everything measured for one server, one entry per repetition (broadcasts: per round)."""

    server: str
    bytes_per_connection: list[float] = field(default_factory=list)
    rss_before_kib: list[int] = field(default_factory=list)
    rss_after_kib: list[int] = field(default_factory=list)
    broadcast_last_ms: list[float] = field(default_factory=list)
    broadcast_median_ms: list[float] = field(default_factory=list)
    broadcast_server_cpu_ms: list[float] = field(default_factory=list)
    invocations_per_s: list[float] = field(default_factory=list)
    invoke_p50_ms: list[float] = field(default_factory=list)
    invoke_p99_ms: list[float] = field(default_factory=list)
    server_cpu_share: list[float] = field(default_factory=list)
    server_cpu_us_per_invocation: list[float] = field(default_factory=list)
    client_cpu_share: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Medians of every series."""
        series = {k: v for k, v in asdict(self).items() if isinstance(v, list)}
        return {k: statistics.median(v) if v else math.nan for k, v in series.items()}


# -- server processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def raise_open_files_limit() -> int:
    """Lift the soft open-files limit to the hard one; the servers inherit it. Returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    # Fields 14 and 15 of /proc/PID/stat (user, system) in clock ticks; the name may hold spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """One server under test in its own process, on a fresh port; ready once it prints ``listening``."""

    def __init__(self, name: str, *, timeout: float, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.timeout = timeout
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def __aenter__(self) -> ServerProcess:
        with self.log_path.open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                *SERVERS[self.name], "--port", str(self.port), cwd=ROOT,
                stdout=asyncio.subprocess.PIPE, stderr=log, stdin=asyncio.subprocess.DEVNULL,
            )
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), self.timeout)
        except BaseException:
            await self._stop()
            raise
        if b"listening" not in line:
            await self._stop()
            raise RuntimeError(f"{self.name} server did not start: {self.log_tail()}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        assert process.stdout is not None
        await process.stdout.read()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]


# -- phases ------------------------------------------------------------------------------------------


class BroadcastRound:
    """Arrival times of one broadcast payload, by connection index."""

    def __init__(self, size: int) -> None:
        self.payload: str | None = None
        self.arrivals = [math.nan] * size
        self.count = 0
        self.done: asyncio.Future[None] | None = None

    def start(self, payload: str) -> asyncio.Future[None]:
        self.payload = payload
        self.arrivals = [math.nan] * len(self.arrivals)
        self.count = 0
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def on_invocation(self, client: HubClient, target: str, arguments: list[Any], arrived_at: float) -> None:
        if target != "Message" or arguments != [self.payload] or not math.isnan(self.arrivals[client.index]):
            return
        self.arrivals[client.index] = arrived_at
        self.count += 1
        if self.count == len(self.arrivals) and self.done is not None and not self.done.done():
            self.done.set_result(None)


async def connect_many(
    negotiator: Negotiator, count: int, *, config: BenchConfig, round_: BroadcastRound | None = None
) -> list[HubClient]:
    gate = asyncio.Semaphore(config.connect_concurrency)
    handler = round_.on_invocation if round_ is not None else None

    async def one(index: int) -> HubClient:
        async with gate:
            return await connect(negotiator, on_invocation=handler, index=index, timeout=config.timeout)

    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    clients = [r for r in results if isinstance(r, HubClient)]
    errors = [r for r in results if not isinstance(r, HubClient)]
    if errors:
        for client in clients:
            client.abort()
        raise RuntimeError(f"{len(errors)} of {count} connections failed, first: {errors[0]!r}")
    return clients


async def close_all(clients: Sequence[HubClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients))


async def memory_and_broadcast(server: ServerProcess, config: BenchConfig, figures: ServerFigures) -> None:
    async with Negotiator(HOST, server.port, HUB_PATH) as negotiator:
        # Warm-up: first-use allocations (imports, caches, method tables) belong to neither side.
        warm_round = BroadcastRound(min(50, config.connections))
        warm = await connect_many(negotiator, len(warm_round.arrivals), config=config, round_=warm_round)
        for client in warm:
            assert await client.invoke("Echo", ECHO_PAYLOAD) == ECHO_PAYLOAD
        done = warm_round.start("warm-up")
        await warm[0].invoke("Broadcast", "warm-up")
        await asyncio.wait_for(done, config.timeout)
        await close_all(warm)

        before = rss_kib(server.pid)
        round_ = BroadcastRound(config.connections)
        clients = await connect_many(negotiator, config.connections, config=config, round_=round_)
        try:
            # One round trip on the newest connection: the server has finished with every handshake.
            assert await clients[-1].invoke("Echo", ECHO_PAYLOAD) == ECHO_PAYLOAD
            after = rss_kib(server.pid)
            figures.rss_before_kib.append(before)
            figures.rss_after_kib.append(after)
            figures.bytes_per_connection.append((after - before) * 1024 / config.connections)

            sender = clients[0]
            for number in range(config.broadcasts + 1):
                done = round_.start(f"broadcast-{number}")
                cpu_before = cpu_seconds(server.pid)
                completion, sent_at = sender.send_invocation("Broadcast", round_.payload)
                try:
                    await asyncio.wait_for(asyncio.shield(done), config.timeout)
                except TimeoutError:
                    raise RuntimeError(
                        f"{server.name}: broadcast reached {round_.count} of {config.connections} connections "
                        f"in {config.timeout} s"
                    ) from None
                await asyncio.wait_for(completion, config.timeout)
                cpu_used = cpu_seconds(server.pid) - cpu_before
                if number == 0:
                    continue
                delays = [(t - sent_at) * 1000 for t in round_.arrivals]
                figures.broadcast_last_ms.append(max(delays))
                figures.broadcast_median_ms.append(statistics.median(delays))
                figures.broadcast_server_cpu_ms.append(cpu_used * 1000)
        finally:
            for client in clients:
                client.abort()


async def invocations(server: ServerProcess, config: BenchConfig, figures: ServerFigures) -> None:
    async with Negotiator(HOST, server.port, HUB_PATH) as negotiator:
        clients = await connect_many(negotiator, config.invoke_connections, config=config)
        latencies: list[float] = []

        async def caller(client: HubClient, until: float, record: bool) -> int:
            done = 0
            while time.perf_counter() < until:
                started = time.perf_counter()
                result = await client.invoke("Echo", ECHO_PAYLOAD)
                if record:
                    latencies.append(time.perf_counter() - started)
                done += result == ECHO_PAYLOAD
            return done

        try:
            warm_until = time.perf_counter() + config.warmup
            await asyncio.gather(*(caller(c, warm_until, False) for c in clients))
            server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
            started = time.perf_counter()
            counts = await asyncio.gather(*(caller(c, started + config.duration, True) for c in clients))
            elapsed = time.perf_counter() - started
            server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu, time.process_time() - client_cpu
        finally:
            await close_all(clients)
        if sum(counts) != len(latencies):
            raise RuntimeError(f"{server.name}: {len(latencies) - sum(counts)} Echo results were wrong")
        ordered = sorted(latencies)
        figures.invocations_per_s.append(len(ordered) / elapsed)
        figures.invoke_p50_ms.append(_percentile(ordered, 50) * 1000)
        figures.invoke_p99_ms.append(_percentile(ordered, 99) * 1000)
        figures.server_cpu_share.append(server_cpu / elapsed)
        figures.server_cpu_us_per_invocation.append(server_cpu / len(ordered) * 1e6)
        figures.client_cpu_share.append(client_cpu / elapsed)


def _percentile(ordered: Sequence[float], p: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


async def run_bench(config: BenchConfig, *, log: Any = None) -> dict[str, ServerFigures]:
    """Run every phase for every server, ``config.repeat`` times, alternating which goes first."""
    unknown = set(config.servers) - SERVERS.keys()
    if unknown:
        raise ValueError(f"unknown servers {sorted(unknown)}; choose from {sorted(SERVERS)}")
    results = {name: ServerFigures(server=name) for name in config.servers}
    with tempfile.TemporaryDirectory(prefix="bench-signalr-") as tmp:
        for repetition in range(config.repeat):
            shift = repetition % len(config.servers)
            order = config.servers[shift:] + config.servers[:shift]
            for name in order:
                for phase in (memory_and_broadcast, invocations):
                    server = ServerProcess(name, timeout=config.timeout, log_dir=Path(tmp))
                    try:
                        async with server:
                            await phase(server, config, results[name])
                    except Exception as exc:
                        raise RuntimeError(f"{name} {phase.__name__} failed: {exc}\n{server.log_tail()}") from exc
                    if log is not None:
                        print(f"rep {repetition + 1}/{config.repeat} {name:<10} {phase.__name__} done",
                              file=log, flush=True)
    return results


# -- report ------------------------------------------------------------------------------------------


ROWS = (
    ("memory per idle connection (KiB)", "bytes_per_connection", 1 / 1024, "lower"),
    ("broadcast to all: last arrival (ms)", "broadcast_last_ms", 1, "lower"),
    ("broadcast to all: median arrival (ms)", "broadcast_median_ms", 1, "lower"),
    ("server CPU per broadcast (ms)", "broadcast_server_cpu_ms", 1, "lower"),
    ("Echo invocations/s", "invocations_per_s", 1, "higher"),
    ("Echo latency p50 (ms)", "invoke_p50_ms", 1, "lower"),
    ("Echo latency p99 (ms)", "invoke_p99_ms", 1, "lower"),
    ("server CPU per Echo (us)", "server_cpu_us_per_invocation", 1, "lower"),
    ("server CPU share in Echo phase", "server_cpu_share", 1, "-"),
    ("client CPU share in Echo phase", "client_cpu_share", 1, "-"),
)


def report(config: BenchConfig, results: dict[str, ServerFigures]) -> str:
    names = list(results)
    summaries = {name: results[name].summary() for name in names}
    lines = [
        f"SignalR hub benchmark: {config.connections} idle connections, {config.broadcasts} broadcasts, "
        f"{config.invoke_connections} Echo callers x {config.duration:g} s, median of {config.repeat} repetition(s)",
        f"{'':<40}" + "".join(f"{n:>14}" for n in names) + ("   ours/aiosignalr" if _pair(names) else ""),
    ]
    for label, key, scale, better in ROWS:
        cells = "".join(f"{summaries[n][key] * scale:>14.2f}" for n in names)
        ratio = ""
        if _pair(names):
            ours, theirs = summaries["ours"][key], summaries["aiosignalr"][key]
            ratio = f"   {ours / theirs:8.2f}" if theirs else "        -"
            ratio += f"  ({better} is better)" if better != "-" else ""
        lines.append(f"{label:<40}{cells}{ratio}")
    if "ours" in summaries:
        lines.append("")
        lines.extend(targets(summaries))
    return "\n".join(lines)


def _pair(names: Sequence[str]) -> bool:
    return "ours" in names and "aiosignalr" in names


def targets(summaries: dict[str, dict[str, float]]) -> list[str]:
    """One line per target of the issue, MET or MISSED."""
    ours = summaries["ours"]
    verdicts = [("broadcast to all delivered in under 1 s", ours["broadcast_last_ms"] < BROADCAST_TARGET_MS)]
    if "aiosignalr" in summaries:
        theirs = summaries["aiosignalr"]
        verdicts.append(("memory per connection <= aiosignalr",
                         ours["bytes_per_connection"] <= theirs["bytes_per_connection"] * MEMORY_TARGET_RATIO))
        verdicts.append(("invocations/s >= aiosignalr",
                         ours["invocations_per_s"] >= theirs["invocations_per_s"] * INVOKE_TARGET_RATIO))
    return [f"target: {text:<44} {'MET' if ok else 'MISSED'}" for text, ok in verdicts]


def parse_args(argv: Sequence[str] | None) -> tuple[BenchConfig, Path | None]:
    defaults = BenchConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=defaults.connections)
    parser.add_argument("--invoke-connections", type=int, default=defaults.invoke_connections)
    parser.add_argument("--duration", type=float, default=defaults.duration)
    parser.add_argument("--warmup", type=float, default=defaults.warmup)
    parser.add_argument("--broadcasts", type=int, default=defaults.broadcasts)
    parser.add_argument("--repeat", type=int, default=defaults.repeat)
    parser.add_argument("--servers", default=",".join(defaults.servers), help="comma-separated: ours,aiosignalr")
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    for name in ("connections", "invoke_connections", "broadcasts", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.timeout <= 0:
        parser.error("--duration and --timeout must be positive, --warmup not negative")
    config = BenchConfig(
        connections=args.connections, invoke_connections=args.invoke_connections, duration=args.duration,
        warmup=args.warmup, broadcasts=args.broadcasts, repeat=args.repeat,
        servers=tuple(s.strip() for s in args.servers.split(",") if s.strip()), timeout=args.timeout,
    )
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    config, json_path = parse_args(argv)
    limit = raise_open_files_limit()
    needed = config.connections + config.invoke_connections + 64
    if limit < needed:
        print(f"open-files limit {limit} is below the {needed} this run needs", file=sys.stderr)
        return 2
    results = asyncio.run(run_bench(config, log=sys.stderr))
    print(report(config, results))
    if json_path is not None:
        payload = {name: {"runs": asdict(f), "median": f.summary()} for name, f in results.items()}
        json_path.write_text(json.dumps({"config": asdict(config), "servers": payload}, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
