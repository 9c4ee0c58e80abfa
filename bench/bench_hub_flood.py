"""Benchmark: connections flooding a hub with tiny invocations and never reading (issue 11, section 2).

Run from the checkout root::

    .venv/bin/python bench/bench_hub_flood.py                 # the gateway, 6 connections x 30 MB, 15 s
    .venv/bin/python bench/bench_hub_flood.py --target hub    # the bare hub server of this script
    .venv/bin/python bench/bench_hub_flood.py --connections 2 --megabytes 5 --flood-seconds 5

Every server is its own process, with a private ``redis-server``. Two targets:

* ``gateway`` (the default): the real gateway (``python -m gateway serve``, one process) with
  ``RedisConnectionString`` on the private Redis, a fixed cap, ``Limits.MaxConnectionsPerIp`` 0 (all the
  bench's connections come from one address) and the platform simulator (``simulate-platform``) behind it.
  The flood goes to ``/sessionHub``: ``Register`` of an id no request has (one per connection), each of
  which costs the gateway real Redis work (the Register script, ``EVALSHA``, whose status lookup makes one
  ``ZRANK``) and a hub error completion, which the client never reads;
* ``hub``: a gateway-like server (this script with ``--serve``): Tornado, the SignalR hub at ``/hub`` with
  the gateway's default ``HubOptions``, whose ``Register(id)`` makes one Redis call (``HGET``), and
  ``GET /healthz``; the invocations carry no id, so the server owes no answer.

``--answers owed|none`` overrides whether the invocations carry an id. The clients (bench/flood_client.py)
live in this process: raw sockets that upgrade to a WebSocket (skipping negotiation), complete the JSON
handshake, then write frames of ~300-400 ``Register`` invocations each until each has written its share or
the flood time is over. They never read; at the end they are dropped, which with their unread bytes makes
the kernel reset them, as a real flooding client's do.

Printed, against the idle baseline measured first:

* server memory: ``VmRSS`` of the server process at idle, the peak during the flood (sampled every 50 ms),
  and the growth; target: growth under 100 MB;
* ``/healthz`` latency at idle and during the flood (one request every 20 ms, each on a new connection,
  from a process of its own); target: p99 under 100 ms;
* how long Redis stays busy after the sockets were dropped: the time from the drop to the last change of
  the call count of the commands only the invocations make (``INFO commandstats``, polled every 10 ms:
  ``HGET`` for the hub; ``ZRANK`` (inside the Register script) for the gateway, whose idle background work
  makes none, and whose ``EVALSHA`` rate after the drop is printed next to its idle rate); target: under 1 s;
* how much each connection could write (back-pressure holds them: what they wrote sits in the kernels'
  socket buffers, not in the server) and how many invocations ran;
* the issue's literal reproduction: a 10 MB frame, refused (close 1009) after how many bytes.

``--signalr-root`` runs the server with the ``signalr`` package of another tree (say a checkout of an
older commit) for a before/after comparison; beware that an unbounded server can take gigabytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # the product packages and the tests harness (tests.harness)
sys.path.insert(0, str(BENCH))

from flood_client import (  # noqa: E402 - after the path set-up
    command_calls, flood, flood_frame, open_hub_socket, oversized_frame, percentile, probe_result,
    redis_quiet_after, rss_kib, sample_rss, start_probe,
)

RSS_TARGET_MB = 100.0
HEALTH_P99_TARGET_MS = 100.0
REDIS_IDLE_TARGET_S = 1.0
API_TOKEN = "bench-api-token"
WEBHOOK_TOKEN = "bench-webhook-token"


@dataclass(frozen=True)
class Target:
    """What is flooded: the hub's path, and the Redis commands that count its invocations."""

    name: str
    path: str
    #: One call per invocation run.
    invocation_command: str
    #: Made only by invocations (and connections): Redis is idle once their counts hold still.
    busy_commands: tuple[str, ...]
    #: The server's idle background work also makes it: its rate is compared, idle against after.
    background_command: str | None
    answers: bool


TARGETS = {
    # (Until 8 Dec 2026 a Register also subscribed to its group: SUBSCRIBE/UNSUBSCRIBE counted it then.)
    "gateway": Target("gateway", "/sessionHub", "zrank", ("zrank",), "evalsha", True),
    "hub": Target("hub", "/hub", "hget", ("hget",), None, False),
}


# -- the bare hub server (``--serve``) ----------------------------------------------------------------------


def serve(port: int, redis_url: str) -> None:
    """A gateway-like server: the hub (default options) and a health route on one Tornado server."""
    import redis.asyncio
    import tornado.httpserver
    import tornado.web

    from signalr import Hub
    from signalr.tornado import hub_routes

    store = redis.asyncio.Redis.from_url(redis_url)

    class FloodHub(Hub):
        async def register(self, uniqueRequestId: str) -> Any:  # noqa: N803 - the wire name
            return await store.hget("flood:requests", uniqueRequestId)

    class Health(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write({"status": "ok"})

    async def main() -> None:
        routes, server = hub_routes(TARGETS["hub"].path, FloodHub)
        app = tornado.web.Application([*routes, (r"/healthz", Health)])
        http = tornado.httpserver.HTTPServer(app, max_body_size=1024 * 1024)
        http.listen(port, address="127.0.0.1")
        await server.start()
        print("listening", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the servers ------------------------------------------------------------------------------------------


def gateway_config(redis_url: str, sim_port: int) -> dict[str, Any]:
    return {
        "AllowedOrigins": ["*"],
        "RedisConnectionString": redis_url,
        "VoiceAiPlatform": {"ApiSecretToken": API_TOKEN, "BaseUrl": f"http://127.0.0.1:{sim_port}/api/v1/",
                            "Campaigns": {"CampA": {"BusinessId": "1", "WebCampaignId": "web-a",
                                                    "AllowedRegionIds": ["eu"]}}},
        "Security": {"WebhookApiToken": WEBHOOK_TOKEN},
        "Concurrency": {"MaxConcurrentSessions": 2},
        # Every flooding connection comes from 127.0.0.1: the per-address cap would refuse most of them.
        "Limits": {"MaxConnectionsPerIp": 0},
    }


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{name} did not start (exit code {process.poll()}); its log ends:\n{tail}")


@contextlib.contextmanager
def servers(args: argparse.Namespace, redis_url: str, workdir: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The target's server process(es); yields the flooded port and the process whose memory is measured."""
    from tests.harness.redis_process import free_port

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    roots = [str(args.signalr_root)] if args.signalr_root else []
    # ``python -m`` puts the working directory first on sys.path, ahead of PYTHONPATH: run from the work
    # directory, so that the signalr package of ``--signalr-root`` comes first, then this tree's packages.
    env["PYTHONPATH"] = os.pathsep.join([*roots, str(ROOT), env.get("PYTHONPATH", "")])
    port, sim_port = free_port(), free_port()
    log_path = workdir / "servers.log"
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(command: list[str]) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            procs.append(subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=workdir))
        return procs[-1]

    py = sys.executable
    try:
        if args.target == "hub":
            server = spawn([py, __file__, "--serve", "--port", str(port), "--redis", redis_url])
        else:
            simulator = spawn([py, "-m", "gateway", "--log-level", "warning", "simulate-platform",
                               "--port", str(sim_port), "--api-token", API_TOKEN, "--webhook-token", WEBHOOK_TOKEN,
                               "--webhook-url", f"http://127.0.0.1:{port}/api/webhook/session-ended"])
            wait_for_port(sim_port, simulator, "the platform simulator", log_path)
            config = workdir / "appsettings.json"
            config.write_text(json.dumps(gateway_config(redis_url, sim_port)))
            server = spawn([py, "-m", "gateway", "--log-level", "warning", "serve", "--config", str(config),
                            "--host", "127.0.0.1", "--port", str(port)])
        wait_for_port(port, server, f"the {args.target} server", log_path)
        yield port, server
    finally:
        for proc in reversed(procs):  # the server first, while Redis still answers its shutdown steps
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- the run --------------------------------------------------------------------------------------------


@dataclass
class Figures:
    target: str = ""
    answers: bool = False
    rss_idle_kib: int = 0
    rss_peak_kib: int = 0
    health_idle: list[float] = field(default_factory=list)
    health_flood: list[float] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    invocations: int = 0
    redis_busy_after_close_s: float = 0.0
    background_idle_per_s: float | None = None
    background_after_per_s: float | None = None
    ended_by_server: int = 0
    oversized_sent: int = 0
    oversized_code: int | None = None
    log_lines: int = 0


def request_id(index: int) -> str:
    """An id no request has (the gateway answers "unknown"), one per connection."""
    return f"00000000-0000-4000-8000-{index:012d}"


async def rate(client: Any, command: str | None, seconds: float) -> float | None:
    """Calls of ``command`` per second over the next ``seconds``."""
    if command is None:
        return None
    before = await command_calls(client, (command,))
    await asyncio.sleep(seconds)
    return (await command_calls(client, (command,)) - before) / seconds


async def measure(args: argparse.Namespace, target: Target, port: int, pid: int, redis_url: str) -> Figures:
    import redis.asyncio

    figures = Figures(target=target.name, answers=args.answers == "owed")
    client = redis.asyncio.Redis.from_url(redis_url)
    loop = asyncio.get_running_loop()
    try:
        # Warm-up: one connection and one frame, so imports and first-use costs are paid before the baseline.
        warm = await open_hub_socket(port, target.path)
        await loop.sock_sendall(warm, flood_frame(request_id(999), answers=figures.answers))
        warm.close()
        idle_probe = await start_probe(port, args.idle_seconds)
        figures.background_idle_per_s = await rate(client, target.background_command, args.idle_seconds)
        figures.health_idle = await probe_result(idle_probe)
        figures.rss_idle_kib = rss_kib(pid)

        sockets = [await open_hub_socket(port, target.path) for _ in range(args.connections)]
        calls_before = await command_calls(client, (target.invocation_command,))
        figures.written = [0] * len(sockets)
        frames = [flood_frame(request_id(i), answers=figures.answers) for i in range(len(sockets))]
        stop = asyncio.Event()
        rss: list[int] = []
        sampler = asyncio.ensure_future(sample_rss(pid, rss, stop))
        probe = await start_probe(port, args.flood_seconds)
        budget = int(args.megabytes * 1_000_000)
        floods = [asyncio.ensure_future(flood(s, frames[i], budget, figures.written, i)) for i, s in enumerate(sockets)]
        figures.health_flood = await probe_result(probe)
        stop.set()
        await sampler
        for task in floods:
            task.cancel()
        outcomes = await asyncio.gather(*floods, return_exceptions=True)
        # A write that failed (not one cancelled at the end): the server ended that connection mid-flood.
        figures.ended_by_server = sum(isinstance(o, OSError) for o in outcomes)
        figures.rss_peak_kib = max(rss)
        dropped = time.perf_counter()
        for sock in sockets:
            sock.close()  # unread bytes wait in it: the kernel resets the connection
        figures.redis_busy_after_close_s = await redis_quiet_after(client, target.busy_commands, dropped)
        figures.invocations = await command_calls(client, (target.invocation_command,)) - calls_before
        figures.background_after_per_s = await rate(client, target.background_command, args.idle_seconds)
        figures.oversized_sent, figures.oversized_code = await oversized_frame(port, target.path)
    finally:
        await client.aclose()
    return figures


def report(args: argparse.Namespace, f: Figures) -> str:
    growth_mb = (f.rss_peak_kib - f.rss_idle_kib) / 1024
    idle_p50, idle_p99 = percentile(f.health_idle, 50), percentile(f.health_idle, 99)
    flood_p50, flood_p99 = percentile(f.health_flood, 50), percentile(f.health_flood, 99)
    written = [w / 1_000_000 for w in f.written]
    target = TARGETS[f.target]
    busy = "/".join(name.upper() for name in target.busy_commands)

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    lines = [
        f"Hub flood of the {f.target} ({target.path}): {args.connections} connections x {args.megabytes:g} MB of "
        f"Register invocations ({'answers owed' if f.answers else 'no answers owed'}), "
        f"{args.flood_seconds:g} s, never reading",
        f"server RSS: idle {f.rss_idle_kib / 1024:.1f} MB, peak during flood {f.rss_peak_kib / 1024:.1f} MB, "
        f"growth {growth_mb:.1f} MB (target < {RSS_TARGET_MB:g} MB: {verdict(growth_mb < RSS_TARGET_MB)})",
        f"/healthz: idle p50 {idle_p50:.1f} ms p99 {idle_p99:.1f} ms ({len(f.health_idle)} requests); during flood "
        f"p50 {flood_p50:.1f} ms p99 {flood_p99:.1f} ms max {max(f.health_flood):.1f} ms ({len(f.health_flood)} "
        f"requests) (target p99 < {HEALTH_P99_TARGET_MS:g} ms: {verdict(flood_p99 < HEALTH_P99_TARGET_MS)})",
        f"Redis busy after the sockets were dropped: {f.redis_busy_after_close_s:.3f} s until the last {busy} "
        f"(target < {REDIS_IDLE_TARGET_S:g} s: {verdict(f.redis_busy_after_close_s < REDIS_IDLE_TARGET_S)})",
    ]
    if target.background_command is not None:
        lines.append(f"{target.background_command.upper()} calls/s of the gateway's own background work: idle "
                     f"{f.background_idle_per_s:.1f}, once Redis was quiet after the drop {f.background_after_per_s:.1f}")
    lines += [
        f"written per connection before the flood ended: min {min(written):.2f} MB, "
        f"median {statistics.median(written):.2f} MB, max {max(written):.2f} MB of {args.megabytes:g} MB; "
        f"invocations run: {f.invocations} ({f.invocations / args.flood_seconds:.0f}/s, "
        f"counted as {target.invocation_command.upper()} calls); connections the server ended during the "
        f"flood: {f.ended_by_server}",
        f"a 10 MB frame: closed with code {f.oversized_code} while its sender was still writing it "
        f"({f.oversized_sent / 1_000_000:.1f} of 10 MB had left the client, into the kernels' buffers)",
        f"server log: {f.log_lines} lines",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> Figures:
    from tests.harness.redis_process import RedisProcess

    target = TARGETS[args.target]
    redis_server = RedisProcess()
    redis_server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hub-flood-") as tmp:
            workdir = Path(tmp)
            with servers(args, redis_server.url, workdir) as (port, server):
                figures = await measure(args, target, port, server.pid, redis_server.url)
            log = (workdir / "servers.log").read_text(errors="replace")
            figures.log_lines = len(log.splitlines())
            if args.server_log is not None:
                args.server_log.write_text(log)
            return figures
    finally:
        redis_server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--target", choices=sorted(TARGETS), default="gateway",
                        help="the real gateway (default) or this script's bare hub server")
    parser.add_argument("--connections", type=int, default=6)
    parser.add_argument("--megabytes", type=float, default=30.0, help="what each connection tries to write")
    parser.add_argument("--flood-seconds", type=float, default=15.0)
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="of the idle baseline")
    parser.add_argument("--answers", choices=("owed", "none"), default=None,
                        help="invocations with an id (the server writes a completion for each) or without; "
                             "default: owed for the gateway, none for the hub")
    parser.add_argument("--signalr-root", type=Path, default=None, help="serve the signalr package of this tree")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--server-log", type=Path, default=None, help="keep the servers' log here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port, args.redis)
        return 0
    if args.answers is None:
        args.answers = "owed" if TARGETS[args.target].answers else "none"
    figures = asyncio.run(run(args))
    print(report(args, figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures.__dict__, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
