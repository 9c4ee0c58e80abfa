"""Benchmark: a crowd waiting on ``/sessionHub`` across ``serve --processes 2`` sharing one Redis (issue 14, §4).

Run: ``.venv/bin/python bench/bench_crowd.py [--waiting 5000 10000 20000] [--samples 50] [--drain 200]
[--drain-rate 20] [--idle-seconds 15] [--client-ping-seconds 15] [--client-ping-burst] [--client-processes N]``

For each crowd size N, fresh servers (a private ``redis-server``, the platform simulator and
``iqra-gateway serve --processes 2``), then:

* **set-up**: N requests are queued (``POST /api/session/request``), then N clients each negotiate
  (``POST /sessionHub/negotiate?negotiateVersion=1``), open the WebSocket with their token, hand-shake and
  ``Register``. The gateway processes' CPU time (supervisor and workers, from ``/proc``) during the hub
  set-up, divided by N, is the **server CPU per connection**; the wall time gives the opens per second.
* **memory per waiting client**: the gateway processes' summed ``VmRSS`` after the set-up minus before it
  (after a warm-up of 200 clients), divided by N.
* **idle CPU**: the gateway processes' CPU over ``--idle-seconds`` with the crowd connected and nothing
  happening, as a share of one core.
* **one slot frees**: after a quiet moment, one session ends (webhook): the time until every waiting
  client has received its new position (the last arrival), three times.
* **SessionReady**: ``--samples`` single releases, webhook to ``SessionReady`` at the front (p50/p99).
* **drain**: ``--drain`` releases at ``--drain-rate`` per second: the ``SessionReady`` messages must arrive
  in queue order (FIFO), allowing a neighbour to overtake by less than one release interval (the two
  workers' platform calls run side by side; the claims themselves are atomic and in order), and the
  positions each client was told must never go up.

Targets (issue 14): at most 20 KiB per waiting client, idle CPU under 10 % of a core, every position within
1 s after a release, ``SessionReady`` p99 under 50 ms, set-up CPU per connection no more than aiosignalr's
0.59 ms (a figure from one run of ``bench_signalr.py``; compare it with a run of that script on the same
machine). The clients are raw asyncio protocols (``crowd_clients.TokenClient``), so the client side costs as
little as possible, spread over client processes (one per 5,000 clients by default: one process could not
hold 20,000 sockets under this machine's open-file limit) that this process drives (``crowd_clients``); on a
two-core machine they still compete with the servers for CPU, which inflates the latencies, not the
server-side CPU and memory figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tornado.httpclient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_session_hub import BODY, CAP, WEBHOOK_TOKEN, Servers, percentile  # noqa: E402
from crowd_clients import ClientProcess, raise_open_files  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
WARM_UP = 200
#: A SessionReady sample this late (seconds) is looked at: did its client process collect garbage meanwhile?
LATE_SAMPLE = 0.050


class CrowdServers(Servers):
    """:class:`bench_session_hub.Servers` with ``serve --processes 2``."""

    def serve_options(self) -> list[str]:
        return ["--processes", "2"]

    def gateway_pids(self) -> list[int]:
        supervisor = self.procs[-1].pid
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        return [supervisor, *(int(pid) for pid in children)]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


async def _queue(http: tornado.httpclient.AsyncHTTPClient, base: str, count: int) -> list[dict[str, Any]]:
    async def one() -> dict[str, Any]:
        response = await http.fetch(base + "/api/session/request", method="POST", body=json.dumps(BODY),
                                    request_timeout=120, headers={"Content-Type": "application/json"})
        return json.loads(response.body)

    out: list[dict[str, Any]] = []
    for start in range(0, count, 100):
        out += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return out


class Crowd:
    """The clients, spread over client processes: client ``i`` (``i``-th in the queue) lives in child
    ``i % len(children)``, so every child holds a slice of every part of the queue."""

    def __init__(self, children: list[ClientProcess], request_ids: list[str], port: int,
                 path: str = "/sessionHub") -> None:
        self.children = children
        self.request_ids = request_ids
        self.port = port
        self.path = path

    def child(self, index: int) -> ClientProcess:
        return self.children[index % len(self.children)]

    async def open(self, indexes: range) -> None:
        shares: list[list[list[Any]]] = [[] for _ in self.children]
        for i in indexes:
            shares[i % len(self.children)].append([i, self.request_ids[i]])
        await asyncio.gather(*(child.call("open", clients=share, port=self.port, path=self.path)
                               for child, share in zip(self.children, shares) if share))

    async def each(self, op: str, **fields: Any) -> list[Any]:
        return list(await asyncio.gather(*(child.call(op, **fields) for child in self.children)))

    async def ready(self, index: int) -> tuple[float, str]:
        at, conversation = await self.child(index).call("ready", index=index)
        return at, conversation

    async def ready_times(self, indexes: list[int], timeout: float) -> list[float]:
        shares: list[list[int]] = [[] for _ in self.children]
        for i in indexes:
            shares[i % len(self.children)].append(i)
        times = await asyncio.gather(*(child.call("ready_times", indexes=share, timeout=timeout)
                                       for child, share in zip(self.children, shares)))
        by_index = {i: t for share, ts in zip(shares, times) for i, t in zip(share, ts)}
        return [by_index[i] for i in indexes]


async def run(waiting: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    servers = CrowdServers(workdir)
    servers.start()
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=100)
    base = f"http://127.0.0.1:{servers.gw_port}"
    children = await asyncio.gather(*(ClientProcess.start()
                                      for _ in range(args.client_processes or 1 + (waiting - 1) // 5000)))
    try:
        await servers.wait_ready(http)
        pids = servers.gateway_pids()
        active = await _queue(http, base, CAP)
        conversations = [a["webSocketUrl"].split("/session/")[1].split("/")[0] for a in active]
        queued = await _queue(http, base, WARM_UP + waiting)
        queued.sort(key=lambda q: q["queuePosition"])
        crowd = Crowd(children, [q["uniqueRequestId"] for q in queued], servers.gw_port)
        await crowd.open(range(WARM_UP))
        await asyncio.sleep(2)  # let the warm-up's position rounds and allocations settle
        load = os.getloadavg()[0]
        rss0, cpu0, t0 = rss_kib(pids), cpu_seconds(pids), time.perf_counter()
        await crowd.open(range(WARM_UP, len(queued)))
        setup_wall, setup_cpu = time.perf_counter() - t0, cpu_seconds(pids) - cpu0
        await asyncio.sleep(2)
        rss1 = rss_kib(pids)
        cpu_idle0 = cpu_seconds(pids)
        await asyncio.sleep(args.idle_seconds)
        idle = (cpu_seconds(pids) - cpu_idle0) / args.idle_seconds
        front = 0

        async def release() -> float:
            started = time.perf_counter()
            response = await http.fetch(base + "/api/webhook/session-ended", method="POST",
                                        headers={"X-Api-Token": WEBHOOK_TOKEN},
                                        body=json.dumps({"ConversationSessionId": conversations.pop(0)}))
            assert response.code == 200
            return started

        spreads = []
        for _ in range(3):
            await asyncio.sleep(2.0)
            await crowd.each("expect", after=front)
            started = await release()
            conversations.append((await crowd.ready(front))[1])
            front += 1
            arrived = await crowd.each("await_expected", timeout=20)
            missing = sum(a["missing"] for a in arrived)
            spreads.append(max(a["last"] for a in arrived) - started if not missing else float("inf"))
        latencies = []
        samples: list[tuple[float, float, int]] = []  # (release, arrival, client index)
        for _ in range(args.samples):
            started = await release()
            at, conversation = await crowd.ready(front)
            latencies.append(at - started)
            samples.append((started, at, front))
            conversations.append(conversation)
            front += 1
        # Which samples found the receiving client's process stalled, by its own garbage collection or by
        # the other clients' messages it handled (see crowd_clients: no real browser holds thousands).
        stalls = [await child.call("stalls", since=samples[0][0]) for child in children]

        def stalled(begin: float, end: float, index: int, *, collecting: bool = False) -> bool:
            return any(start < end and start + seconds > begin and (gc_ran or not collecting)
                       for start, seconds, gc_ran in stalls[index % len(children)])

        late = [(s, e, i) for s, e, i in samples if e - s >= LATE_SAMPLE]
        late_client_stalled = sum(stalled(s, e, i) for s, e, i in late)
        late_client_collecting = sum(stalled(s, e, i, collecting=True) for s, e, i in late)
        unstalled = [e - s for s, e, i in samples if not stalled(s, e, i)]
        # The drain: releases at a steady rate; every client served must be served in queue order.
        drained = list(range(front, front + args.drain))
        harvested = 0  # the served clients whose sessions can be ended in turn (the cap's live sessions)
        interval = 1.0 / args.drain_rate
        next_at = time.perf_counter()
        for _ in range(args.drain):
            while not conversations:
                conversations.append((await crowd.ready(drained[harvested]))[1])
                harvested += 1
            next_at += interval
            await release()
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        ready_times = await crowd.ready_times(drained, 120)
        # Claims are atomic and in queue order, but the two workers' platform calls run side by side, so
        # a SessionReady may overtake the one just ahead of it by a little. Out of order means more than
        # one release interval: served ahead of a client that was claimed a release earlier.
        overtakes = [a - b for a, b in zip(ready_times, ready_times[1:]) if b < a]
        fifo = max(overtakes, default=0.0) < interval
        monotone = all(await crowd.each("monotone"))
        return {
            "waiting": waiting, "setup_cpu_ms": 1000 * setup_cpu / waiting, "opens_per_s": waiting / setup_wall,
            "kib_per_client": (rss1 - rss0) / waiting, "idle_cpu": idle, "positions_s": spreads,
            "ready_p50_ms": 1000 * percentile(latencies, 50), "ready_p99_ms": 1000 * percentile(latencies, 99),
            "late": len(late), "late_client_stalled": late_client_stalled,
            "late_client_collecting": late_client_collecting,
            "ready_p99_unstalled_ms": 1000 * percentile(unstalled, 99) if unstalled else None,
            "unstalled": len(unstalled),
            "fifo": fifo, "overtakes": len(overtakes), "overtake_max_ms": 1000 * max(overtakes, default=0.0),
            "positions_only_fall": monotone, "load": load, "client_processes": len(children),
        }
    finally:
        await asyncio.gather(*(child.stop() for child in children), return_exceptions=True)
        http.close()
        servers.stop()


class OneProcessServers(Servers):
    """:class:`bench_session_hub.Servers` (``serve`` in one process), with :meth:`gateway_pids`."""

    def gateway_pids(self) -> list[int]:
        return [self.procs[-1].pid]


#: The set-up comparison's targets: what serves, and whether clients ``Register``.
SETUP_TARGETS = ("aiosignalr", "signalr", "gateway-1", "gateway-2", "gateway-2+register")


async def setup_cost(target: str, count: int, workdir: Path, processes: int) -> tuple[float, float]:
    """Server CPU ms per connection and opens per second for ``count`` clients that negotiate, open the
    WebSocket and hand-shake (and ``Register``, for ``gateway-2+register``), after a warm-up of 200.

    ``aiosignalr`` and ``signalr`` are ``bench_signalr.py``'s chat servers (aiosignalr, and our hub without
    the gateway: ``examples.chat``); ``gateway-1`` is ``serve``, ``gateway-2`` ``serve --processes 2``.
    """
    from bench_signalr import ServerProcess

    children = await asyncio.gather(*(ClientProcess.start() for _ in range(processes)))
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=100)
    stack: Any = None
    try:
        if target in ("aiosignalr", "signalr"):
            stack = ServerProcess("ours" if target == "signalr" else target, timeout=30, log_dir=workdir)
            await stack.__aenter__()
            port, path, pids = stack.port, "/chat", [stack.pid]
        else:
            stack = (OneProcessServers if target == "gateway-1" else CrowdServers)(workdir)
            stack.start()
            await stack.wait_ready(http)
            port, path, pids = stack.gw_port, "/sessionHub", stack.gateway_pids()
        ids = [""] * (WARM_UP + count)
        if target.endswith("+register"):
            await _queue(http, f"http://127.0.0.1:{port}", CAP)
            ids = [q["uniqueRequestId"] for q in await _queue(http, f"http://127.0.0.1:{port}", WARM_UP + count)]
        crowd = Crowd(children, ids, port, path)
        await crowd.open(range(WARM_UP))
        await asyncio.sleep(1)
        cpu0, t0 = cpu_seconds(pids), time.perf_counter()
        await crowd.open(range(WARM_UP, WARM_UP + count))
        wall, cpu = time.perf_counter() - t0, cpu_seconds(pids) - cpu0
        return 1000 * cpu / count, count / wall
    finally:
        await asyncio.gather(*(child.stop() for child in children), return_exceptions=True)
        http.close()
        if isinstance(stack, Servers):
            stack.stop()
        elif stack is not None:
            await stack.__aexit__(None, None, None)


def compare_setup(args: argparse.Namespace) -> None:
    """``--compare-setup N``: each target's set-up cost, the targets alternating, ``--repeat`` rounds."""
    print(f"connection set-up, {args.compare_setup} connections per run, server CPU ms per connection "
          f"(opens per second)", flush=True)
    results: dict[str, list[tuple[float, float]]] = {t: [] for t in args.targets}
    for round_number in range(args.repeat):
        for target in args.targets:
            with tempfile.TemporaryDirectory(prefix="bench-crowd-") as tmp:
                load = os.getloadavg()[0]
                cost = asyncio.run(setup_cost(target, args.compare_setup, Path(tmp),
                                              args.client_processes or 1 + (args.compare_setup - 1) // 5000))
            results[target].append(cost)
            print(f"  round {round_number + 1} {target:20s} {cost[0]:.2f} ms ({cost[1]:.0f}/s), load {load:.1f}",
                  flush=True)
    for target, costs in results.items():
        median = sorted(c[0] for c in costs)[len(costs) // 2]
        print(f"{target:20s} median {median:.2f} ms CPU per connection", flush=True)


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiting", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--samples", type=int, default=50, help="single releases timed to SessionReady")
    parser.add_argument("--drain", type=int, default=200, help="releases of the drain phase")
    parser.add_argument("--drain-rate", type=float, default=20.0, help="releases per second while draining")
    parser.add_argument("--idle-seconds", type=float, default=15.0,
                        help="measure idle CPU this long (one Ping interval of the hub and of the clients)")
    parser.add_argument("--client-ping-seconds", type=float, default=15.0,
                        help="seconds between a client's Pings (the official clients': 15)")
    parser.add_argument("--client-ping-burst", action="store_true",
                        help="every client pings at the same instant (the pattern before 7 Dec 2026, evening)")
    parser.add_argument("--client-processes", type=int, default=0,
                        help="processes holding the clients (default: one per 5,000 clients)")
    parser.add_argument("--compare-setup", type=int, default=0, metavar="N",
                        help="instead: the set-up CPU of N connections on each of --targets")
    parser.add_argument("--targets", nargs="+", choices=SETUP_TARGETS, default=list(SETUP_TARGETS))
    parser.add_argument("--repeat", type=int, default=1, help="rounds of --compare-setup")
    args = parser.parse_args()
    # The servers inherit the limit: each gateway worker holds a socket per client it serves.
    raise_open_files(max(args.waiting + [args.compare_setup]) + 5000)
    # Read by the client processes (bench/crowd_clients.py) when they start.
    os.environ["CROWD_PING_SECONDS"] = str(args.client_ping_seconds)
    os.environ["CROWD_PING_BURST"] = "1" if args.client_ping_burst else "0"
    if args.compare_setup:
        compare_setup(args)
        return
    pings = "all at once" if args.client_ping_burst else "each at its own phase"
    print(f"/sessionHub crowd on serve --processes 2, one Redis; cap {CAP}; clients ping every "
          f"{args.client_ping_seconds:g} s, {pings}", flush=True)
    for waiting in args.waiting:
        with tempfile.TemporaryDirectory(prefix="bench-crowd-") as tmp:
            try:
                r = asyncio.run(run(waiting, args, Path(tmp)))
            except BaseException:
                print(f"failed; the servers' log:\n{(Path(tmp) / 'servers.log').read_text()[-4000:]}", flush=True)
                raise
        positions = ", ".join("lost" if s == float("inf") else f"{1000 * s:.0f}" for s in r["positions_s"])
        print(f"{waiting:6d} waiting: {r['kib_per_client']:.1f} KiB/client (target <= 20); idle CPU "
              f"{100 * r['idle_cpu']:.1f} % of a core (< 10); set-up {r['setup_cpu_ms']:.2f} ms CPU/connection, "
              f"{r['opens_per_s']:.0f} opens/s; all positions after a release in {positions} ms (<= 1000); "
              f"SessionReady p50 {r['ready_p50_ms']:.1f} / p99 {r['ready_p99_ms']:.1f} ms (< 50; {r['late']} "
              f"samples over {1000 * LATE_SAMPLE:.0f} ms, {r['late_client_stalled']} of them while their client "
              f"process stalled ({r['late_client_collecting']} collecting garbage); p99 of the {r['unstalled']} "
              f"samples whose client process did not stall: {_ms(r['ready_p99_unstalled_ms'])}); "
              f"FIFO {'yes' if r['fifo'] else 'NO'} ({r['overtakes']} adjacent overtakes, at most "
              f"{r['overtake_max_ms']:.0f} ms); positions only fall {'yes' if r['positions_only_fall'] else 'NO'}; "
              f"{r['client_processes']} client processes, load average {r['load']:.1f} before the set-up",
              flush=True)


if __name__ == "__main__":
    main()
