"""Benchmark: ``POST /api/session/request`` on the queued and admitted paths against a baseline, Redis round
trips per admission decision, and the session-ended webhook's answer time while dispatch runs.

Run: ``.venv/bin/python bench/bench_admission.py [--duration 5] [--connections 32] [--rounds 3] [--profile DIR]``

Every server is its own process: the platform simulator (``iqra-gateway simulate-platform``), three
gateways (queued path with cap 0, admitted path with a cap that is never reached, webhook phase with a
small cap and a long queue) and the baseline (a bare Tornado handler doing one EVALSHA). Each has a
private ``redis-server``, so what one Redis sees comes from one server only.

Figures per run: requests/s and p50/p99 from the closed-loop client, and CPU time per request of the
server and of its Redis (from ``/proc``), which is the figure to trust on a shared machine: requests/s
moves with whatever else runs, CPU per request hardly does. Round trips are counted exactly with
``MONITOR`` over a fixed number of requests: commands run inside scripts are not round trips, and each
EVALSHA is named by the admission script it runs, so background work (hub presence, timers) shows apart.

The gateways run the composition root as ``iqra-gateway serve`` does (see :func:`serve_gateway`), except
that the queued and admitted ones set the dispatcher's timer to an hour, so that no claim round runs
during their measurements. Baseline and queued runs alternate ``--rounds`` times, so that drift in the
machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import socket
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from pathlib import Path

import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the product packages and the tests harness (tests.harness)
sys.path.insert(0, str(ROOT / "bench"))

from gateway.admission.store import _OPERATIONS, _script_source  # noqa: E402
from loadgen import LoadResult, build_request, run_load  # noqa: E402
from tests.harness.redis_process import RedisProcess, free_port  # noqa: E402

WEBHOOK_TOKEN = "bench-webhook"
API_TOKEN = "bench-token"
ACTIVE_KEY = "iqra:admission:leases:active"
QUEUE_KEY = "iqra:admission:queue"
#: Dispatcher timer of the request-path gateways: long enough never to fire during a run.
QUIET_DISPATCH_INTERVAL = 3600.0

BODY = json.dumps({
    "campaignId": "BenchCampaign", "regionId": "local", "transportType": 0, "clientIdentifier": None,
    "dynamicVariables": {"name": "bench"}, "metadata": {"source": "bench"},
    "audioConfiguration": {"inputEncodingType": 1, "inputSampleRate": 16000, "inputBitsPerSample": 16,
                           "outputEncodingType": 1, "outputSampleRate": 16000, "outputBitsPerSample": 16},
}).encode()


# -- the gateway process ---------------------------------------------------------------------------------

def serve_gateway(config: str, host: str, port: int, dispatch_interval: float) -> None:
    """What ``iqra-gateway serve`` does, with the dispatcher's timer interval as a parameter."""
    import logging

    from gateway.app import Gateway
    from gateway.cli.serve import settle_heap
    from gateway.config import load_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    async def run() -> None:
        gateway = Gateway(load_settings(config).settings, dispatch_interval=dispatch_interval)
        await gateway.start(port=port, host=host)
        settle_heap()  # as `serve` does
        print(f"gateway listening on http://{host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await gateway.stop(grace=2)

    asyncio.run(run())


# -- process plumbing ------------------------------------------------------------------------------------

class Processes:
    """Child processes with their output in log files (a pipe nobody reads would block them)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def spawn(self, name: str, args: list[str], port: int, timeout: float = 30.0) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()
        self.procs.append((name, proc))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            if _answers_http(port):
                return proc
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not answer HTTP on port {port} within {timeout} s:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 20) -> str:
        text = (self.logdir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop_all(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _answers_http(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up (the baseline has no /healthz)
    except OSError:
        return False


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time per answered request of a server process and of its Redis: unlike requests/s, it hardly
    depends on what else the (shared) machine is running."""

    def __init__(self, server_pid: int, redis_pid: int) -> None:
        self._pids = (server_pid, redis_pid)
        self._start = tuple(_cpu_seconds(pid) for pid in self._pids)

    def per_request_us(self, requests: int) -> tuple[float, float]:
        used = [_cpu_seconds(pid) - start for pid, start in zip(self._pids, self._start, strict=True)]
        return used[0] / requests * 1e6, used[1] / requests * 1e6


def _post_json(url: str, body: object) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()


def _config(path: Path, *, redis_url: str, sim_port: int, cap: int) -> Path:
    path.write_text(json.dumps({
        "RedisConnectionString": redis_url,
        "VoiceAiPlatform": {"ApiSecretToken": API_TOKEN, "BaseUrl": f"http://127.0.0.1:{sim_port}/api/v1/",
                            "Campaigns": {"BenchCampaign": {"BusinessId": "1", "WebCampaignId": "w",
                                                            "AllowedRegionIds": ["local"]}}},
        "Security": {"WebhookApiToken": WEBHOOK_TOKEN},
        "Concurrency": {"MaxConcurrentSessions": cap},
        "Queue": {"MaxLength": 10_000_000},
    }))
    return path


class CommandMonitor:
    """Every command one Redis receives, from ``MONITOR``, split into round trips and script-internal calls.

    Commands a Lua script runs show as coming from ``lua``; everything else is a round trip of some
    client. EVALSHA round trips are named by the admission operation whose script has that SHA, so the
    admission decision's EVALSHA is told apart from those of background tasks (dispatcher timer, hub).
    """

    _LINE = re.compile(r'^\+[0-9.]+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?')

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"MONITOR\r\n")
        self._file = self._sock.makefile("rb")
        if not self._file.readline().startswith(b"+OK"):
            raise RuntimeError("MONITOR refused")
        self._shas = {hashlib.sha1(_script_source(op).encode()).hexdigest(): op for op in _OPERATIONS}
        self.round_trips: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._file:
            match = self._LINE.match(raw.decode("utf-8", "replace"))
            if match is None or match.group(1) == "lua":
                continue
            command = match.group(2).lower()
            if command == "evalsha":
                command = f"evalsha:{self._shas.get(match.group(3) or '', 'other script')}"
            self.round_trips[command] += 1

    def stop(self) -> Counter[str]:
        # An ECHO from another client marks the end: everything before it has been read once it shows up.
        marker = redis.Redis(port=self._sock.getpeername()[1])
        marker.execute_command("ECHO", "bench-monitor-end")
        marker.close()
        deadline = time.monotonic() + 10
        while self.round_trips["echo"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
        self.round_trips.pop("echo", None)
        return self.round_trips


def _round_trips(port: int, redis_port: int, *, requests: int) -> str:
    """Send exactly ``requests`` session requests and name every round trip Redis saw meanwhile."""
    monitor = CommandMonitor(redis_port)
    result = _session_requests(port, connections=8, duration=3600, warmup=0, limit=requests)
    seen = monitor.stop()
    answered = result.total_requests
    return (f"{answered} requests {dict(sorted(result.statuses.items()))}: "
            + ", ".join(f"{name} {count} ({count / answered:.3f}/request)" for name, count in sorted(seen.items())))


# -- measurements ----------------------------------------------------------------------------------------

def _session_requests(port: int, *, connections: int, duration: float, warmup: float = 1.0,
                      limit: int | None = None) -> LoadResult:
    request = build_request("POST", "127.0.0.1", port, "/api/session/request", BODY,
                            {"Content-Type": "application/json"})
    sent = 0

    def source() -> bytes | None:
        nonlocal sent
        if limit is not None and sent >= limit:
            return None
        sent += 1
        return request

    return asyncio.run(run_load("127.0.0.1", port, source, connections=connections, duration=duration,
                                warmup=warmup))


def _webhooks(port: int, redis_url: str, *, connections: int, duration: float) -> LoadResult:
    """Each webhook ends a different live session, freeing a slot the dispatcher fills from the queue."""

    async def run() -> LoadResult:
        client = aioredis.Redis.from_url(redis_url)
        ids: deque[bytes] = deque()
        sent: set[bytes] = set()
        stop_at = time.perf_counter() + 1.0 + duration  # run_load's warm-up plus the window

        async def next_webhook() -> bytes | None:
            while True:
                while ids:
                    conversation = ids.popleft()
                    if conversation not in sent:
                        sent.add(conversation)
                        body = json.dumps({"ConversationSessionId": conversation.decode()}).encode()
                        return build_request("POST", "127.0.0.1", port, "/api/webhook/session-ended", body,
                                             {"Content-Type": "application/json", "X-Api-Token": WEBHOOK_TOKEN})
                if time.perf_counter() >= stop_at:
                    return None
                fresh = [c for c in await client.zrange(ACTIVE_KEY, 0, -1) if c not in sent]
                if fresh:
                    ids.extend(fresh)
                else:
                    await asyncio.sleep(0.002)  # the dispatcher has not activated the next session yet

        try:
            return await run_load("127.0.0.1", port, next_webhook, connections=connections, duration=duration)
        finally:
            await client.aclose()

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="client connections (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating baseline/queued rounds (default 3)")
    parser.add_argument("--webhook-connections", type=int, default=8)
    parser.add_argument("--webhook-cap", type=int, default=64, help="sessions live during the webhook phase")
    parser.add_argument("--webhook-queue", type=int, default=5000, help="entries queued for the webhook phase")
    parser.add_argument("--sample", type=int, default=500, help="requests in each round-trip count (default 500)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the queued gateway during its first run; "
                        "collapsed stacks go to DIR/queued.txt")
    parser.add_argument("--keep-logs", action="store_true", help="print where the process logs are kept")
    # Internal: the bench starts its gateways through this entry point.
    parser.add_argument("--serve-gateway", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dispatch-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_gateway:
        serve_gateway(args.serve_gateway, "127.0.0.1", args.port, args.dispatch_interval)
        return

    tmp = Path(tempfile.mkdtemp(prefix="iqra-bench-"))
    redises = {name: RedisProcess() for name in ("baseline", "queued", "admitted", "webhook")}
    procs = Processes(tmp)
    try:
        for server in redises.values():
            server.start()
        py = sys.executable
        sim_port, queued_port, admitted_port, webhook_port, base_port = (free_port() for _ in range(5))
        procs.spawn("simulator", [py, "-m", "gateway", "--log-level", "warning", "simulate-platform",
                                  "--port", str(sim_port), "--api-token", API_TOKEN, "--call-seconds", "0",
                                  "--webhook-url", f"http://127.0.0.1:{webhook_port}/api/webhook/session-ended",
                                  "--webhook-token", WEBHOOK_TOKEN], sim_port)
        # Calls never end by themselves here, so the simulator's own limit must not be what refuses them.
        _post_json(f"http://127.0.0.1:{sim_port}/_sim/limit", {"limit": 100_000_000})
        gateways = {"queued": (queued_port, 0, QUIET_DISPATCH_INTERVAL),
                    "admitted": (admitted_port, 100_000_000, QUIET_DISPATCH_INTERVAL),
                    "webhook": (webhook_port, args.webhook_cap, 1.0)}
        for name, (port, cap, interval) in gateways.items():
            config = _config(tmp / f"{name}.json", redis_url=redises[name].url, sim_port=sim_port, cap=cap)
            procs.spawn(f"gateway-{name}", [py, str(Path(__file__).resolve()), "--serve-gateway", str(config),
                                            "--port", str(port), "--dispatch-interval", str(interval)], port)
        procs.spawn("baseline", [py, str(ROOT / "bench" / "baseline_server.py"), "--port", str(base_port),
                                 "--redis-url", redises["baseline"].url], base_port)

        print(f"POST /api/session/request: {args.connections} connections, {args.duration:g} s measured "
              f"(after 1 s warm-up) per run, {args.rounds} alternating round(s)")
        baselines: list[LoadResult] = []
        queueds: list[LoadResult] = []
        pid = {name: p.pid for name, p in procs.procs}
        cpu: dict[str, list[tuple[float, float]]] = {"baseline": [], "queued": [], "admitted": []}

        def measured(name: str, port: int, label: str) -> LoadResult:
            meter = CpuMeter(pid[name if name == "baseline" else f"gateway-{name}"], redises[name].pid)
            result = _session_requests(port, connections=args.connections, duration=args.duration)
            cpu[name].append(meter.per_request_us(result.total_requests))
            print(f"{result.summary(label)}   CPU/request: server {cpu[name][-1][0]:.0f} us, "
                  f"redis {cpu[name][-1][1]:.0f} us", flush=True)
            return result

        profiler = None
        for _ in range(args.rounds):
            baselines.append(measured("baseline", base_port, "baseline (Tornado + 1 EVALSHA)"))
            if args.profile and not queueds:
                Path(args.profile).mkdir(parents=True, exist_ok=True)
                # Started now, so that the samples are the queued run's (py-spy attaches within the warm-up).
                profiler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format",
                                             "raw", "--rate", "250", "--nonblocking",
                                             "-o", str(Path(args.profile) / "queued.txt"),
                                             "--pid", str(pid["gateway-queued"])],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            queueds.append(measured("queued", queued_port, "gateway, queued path (202)"))
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                profiler.wait(30)
                profiler = None
        admitted = measured("admitted", admitted_port, "gateway, admitted path (200)")
        ratios = [q.rps / b.rps for q, b in zip(queueds, baselines, strict=True)]
        print()
        print(f"queued / baseline throughput:   {statistics.median(ratios):.2f}x median "
              f"(per round: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.80)")
        print(f"admitted / baseline throughput: {admitted.rps / statistics.median(b.rps for b in baselines):.2f}x "
              f"(the admitted path also calls the platform simulator and records the session)")
        med = {name: (statistics.median(c[0] for c in v), statistics.median(c[1] for c in v)) for name, v in cpu.items()}
        print(f"CPU per request (median; server / its redis): baseline {med['baseline'][0]:.0f} / "
              f"{med['baseline'][1]:.0f} us, queued {med['queued'][0]:.0f} / {med['queued'][1]:.0f} us, "
              f"admitted {med['admitted'][0]:.0f} / {med['admitted'][1]:.0f} us (gateway; the simulator not counted)")
        print(f"queued / baseline server CPU per request: {med['queued'][0] / med['baseline'][0]:.2f}x "
              f"(throughput at saturation would be about its inverse, "
              f"{med['baseline'][0] / med['queued'][0]:.2f}x)")
        print()
        print("Redis round trips (MONITOR; commands run inside scripts not counted; background tasks included):")
        print(f"  queued:   {_round_trips(queued_port, redises['queued'].port, requests=args.sample)}")
        print(f"  admitted: {_round_trips(admitted_port, redises['admitted'].port, requests=args.sample)}")
        print(f"  baseline: {_round_trips(base_port, redises['baseline'].port, requests=args.sample)}")
        print()
        print(f"POST /api/webhook/session-ended while the dispatcher serves the queue: cap {args.webhook_cap}, "
              f"{args.webhook_queue} queued, {args.webhook_connections} connections")
        fill = _session_requests(webhook_port, connections=args.connections, duration=3600, warmup=0,
                                 limit=args.webhook_cap + args.webhook_queue)
        control = redis.Redis.from_url(redises["webhook"].url)
        queued_before = control.zcard(QUEUE_KEY)
        print(f"filled: {fill.statuses}; {control.zcard(ACTIVE_KEY)} live, {queued_before} queued")
        hooks = _webhooks(webhook_port, redises["webhook"].url, connections=args.webhook_connections,
                          duration=args.duration)
        print(hooks.summary("webhook (200 = slot freed)"))
        queued_after = control.zcard(QUEUE_KEY)
        print(f"dispatched during the webhook phase: {queued_before - queued_after} "
              f"({queued_after} still queued; the issue asks for answers within 100 ms)")
        if args.keep_logs:
            print(f"process logs: {tmp}")
    finally:
        procs.stop_all()
        for server in redises.values():
            server.close()


if __name__ == "__main__":
    main()
