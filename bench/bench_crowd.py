"""Benchmark: a crowd waiting on ``/sessionHub`` across ``serve --processes 2`` sharing one Redis (issue 14, §4).

Run: ``.venv/bin/python bench/bench_crowd.py [--waiting 5000 10000 20000] [--samples 50] [--drain 200]
[--drain-rate 20] [--idle-seconds 10]``

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
machine). The clients are this process's raw asyncio protocols (``bench_session_hub.Client``), so the
client side costs as little as possible; on a two-core machine they still compete with the servers for CPU,
which inflates the latencies, not the server-side CPU and memory figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tornado.httpclient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_session_hub import BODY, CAP, WEBHOOK_TOKEN, Client, Servers, percentile  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
WARM_UP = 200


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


class TokenClient(Client):
    """A waiting client that negotiates first and opens the WebSocket with its token (``?id=``), as the
    official clients do; the ``--processes`` front routes the socket to the worker that negotiated it."""

    token = ""

    def __init__(self, request_id: str, arrivals: list[float]) -> None:
        super().__init__(request_id, arrivals)
        #: Every position this client was told, in order (an update may come before the Register result).
        self.seen: list[int] = []

    async def connect(self, host: str, port: int) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        assert self.transport is not None
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((f"GET /sessionHub?id={self.token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                              "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await asyncio.wait_for(self._upgraded, 60)
        self.send(json.dumps({"protocol": "json", "version": 1}) + "\x1e")
        self.send(json.dumps({"type": 1, "invocationId": "1", "target": "Register",
                              "arguments": [self.request_id]}) + "\x1e")
        result = await asyncio.wait_for(self.registered, 60)
        if not self.seen:  # no update overtook the Register result
            self.position = result["queuePosition"]
            self.seen.append(self.position)

    def _on_text(self, text: str, now: float) -> None:
        before = self.position
        super()._on_text(text, now)
        if self.position != before:
            self.seen.append(self.position)


async def _queue(http: tornado.httpclient.AsyncHTTPClient, base: str, count: int) -> list[dict[str, Any]]:
    async def one() -> dict[str, Any]:
        response = await http.fetch(base + "/api/session/request", method="POST", body=json.dumps(BODY),
                                    request_timeout=120, headers={"Content-Type": "application/json"})
        return json.loads(response.body)

    out: list[dict[str, Any]] = []
    for start in range(0, count, 100):
        out += await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    return out


async def _open(http: tornado.httpclient.AsyncHTTPClient, base: str, port: int, clients: list[TokenClient]) -> None:
    async def one(client: TokenClient) -> None:
        response = await http.fetch(base + "/sessionHub/negotiate?negotiateVersion=1", method="POST", body=b"",
                                    request_timeout=120)
        client.token = json.loads(response.body)["connectionToken"]
        await client.connect("127.0.0.1", port)

    for start in range(0, len(clients), 100):
        await asyncio.gather(*(one(c) for c in clients[start:start + 100]))


PING = json.dumps({"type": 6}) + "\x1e"


async def keep_alive(clients: list[TokenClient]) -> None:
    """Ping every connected client every 10 s, as real clients do: the hub closes a connection that has
    said nothing for its client timeout (30 s), and a crowd's set-up alone takes longer than that."""
    while True:
        await asyncio.sleep(10)
        for client in clients:
            if client.transport is not None and client.registered.done():
                client.send(PING)


async def run(waiting: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    servers = CrowdServers(workdir)
    servers.start()
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=100)
    base = f"http://127.0.0.1:{servers.gw_port}"
    clients: list[TokenClient] = []
    try:
        await servers.wait_ready(http)
        pids = servers.gateway_pids()
        active = await _queue(http, base, CAP)
        conversations = [a["webSocketUrl"].split("/session/")[1].split("/")[0] for a in active]
        arrivals: list[float] = []
        queued = await _queue(http, base, WARM_UP + waiting)
        queued.sort(key=lambda q: q["queuePosition"])
        clients = [TokenClient(q["uniqueRequestId"], arrivals) for q in queued]
        pinger = asyncio.ensure_future(keep_alive(clients))
        await _open(http, base, servers.gw_port, clients[:WARM_UP])
        await asyncio.sleep(2)  # let the warm-up's position rounds and allocations settle
        rss0, cpu0, t0 = rss_kib(pids), cpu_seconds(pids), time.perf_counter()
        await _open(http, base, servers.gw_port, clients[WARM_UP:])
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
            rest = clients[front + 1:]
            expected = {id(c): c.position - 1 for c in rest}
            started = await release()
            await asyncio.wait_for(clients[front].ready, 60)
            conversations.append(clients[front].conversation)
            front += 1
            deadline = time.perf_counter() + 20
            while any(c.position != expected[id(c)] for c in rest) and time.perf_counter() < deadline:
                await asyncio.sleep(0.01)
            missing = sum(1 for c in rest if c.position != expected[id(c)])
            spreads.append(max(c.position_at for c in rest) - started if not missing else float("inf"))
        latencies = []
        for _ in range(args.samples):
            started = await release()
            latencies.append(await asyncio.wait_for(clients[front].ready, 60) - started)
            conversations.append(clients[front].conversation)
            front += 1
        # The drain: releases at a steady rate; every client served must be served in queue order.
        drained = clients[front:front + args.drain]
        harvested = 0  # the served clients whose sessions can be ended in turn (the cap's live sessions)
        interval = 1.0 / args.drain_rate
        next_at = time.perf_counter()
        for _ in range(args.drain):
            while not conversations:
                await asyncio.wait_for(drained[harvested].ready, 60)
                conversations.append(drained[harvested].conversation)
                harvested += 1
            next_at += interval
            await release()
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in drained)), 120)
        ready_times = [c.ready.result() for c in drained]
        # Claims are atomic and in queue order, but the two workers' platform calls run side by side, so
        # a SessionReady may overtake the one just ahead of it by a little. Out of order means more than
        # one release interval: served ahead of a client that was claimed a release earlier.
        overtakes = [a - b for a, b in zip(ready_times, ready_times[1:]) if b < a]
        fifo = max(overtakes, default=0.0) < interval
        monotone = all(all(a > b for a, b in zip(c.seen, c.seen[1:])) for c in clients)
        return {
            "waiting": waiting, "setup_cpu_ms": 1000 * setup_cpu / waiting, "opens_per_s": waiting / setup_wall,
            "kib_per_client": (rss1 - rss0) / waiting, "idle_cpu": idle, "positions_s": spreads,
            "ready_p50_ms": 1000 * percentile(latencies, 50), "ready_p99_ms": 1000 * percentile(latencies, 99),
            "fifo": fifo, "overtakes": len(overtakes), "overtake_max_ms": 1000 * max(overtakes, default=0.0),
            "positions_only_fall": monotone,
        }
    finally:
        if clients:
            pinger.cancel()
        for c in clients:
            c.close()
        http.close()
        servers.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiting", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--samples", type=int, default=50, help="single releases timed to SessionReady")
    parser.add_argument("--drain", type=int, default=200, help="releases of the drain phase")
    parser.add_argument("--drain-rate", type=float, default=20.0, help="releases per second while draining")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"/sessionHub crowd on serve --processes 2, one Redis; cap {CAP}", flush=True)
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
              f"SessionReady p50 {r['ready_p50_ms']:.1f} / p99 {r['ready_p99_ms']:.1f} ms (< 50); "
              f"FIFO {'yes' if r['fifo'] else 'NO'} ({r['overtakes']} adjacent overtakes, at most "
              f"{r['overtake_max_ms']:.0f} ms); positions only fall {'yes' if r['positions_only_fall'] else 'NO'}",
              flush=True)


if __name__ == "__main__":
    main()
