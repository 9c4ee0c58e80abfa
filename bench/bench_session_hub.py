"""Benchmark: /sessionHub with 1,000 and 5,000 waiting clients.

Run: ``.venv/bin/python bench/bench_session_hub.py [--waiting 1000 5000] [--samples 200] [--repeat 1]
[--gateway-root DIR]``

Measures, for each number of waiting clients:

* the latency from the session-ended webhook to ``SessionReady`` at the client at the front (p50/p99),
  also with the simulator's own initiate latency (its p50, measured directly) taken off. Releases run
  back to back, so about one in three samples overlaps a position round (a new position for every
  waiting client, at most one round a second); the samples are also reported split into those during
  which some client received a position ("during a round") and the others ("quiet");
* the time for every waiting client to receive its new ``QueuePositionUpdated`` after one release.

``--gateway-root`` runs the gateway from another source tree (say a copy of an older commit) against the
same clients, for a before/after comparison under the same machine load; ``--repeat`` alternates runs.

Targets (issue 4): p99 under 50 ms; all positions delivered within 1 s at 5,000 waiting clients.

Every server is its own process, as in production: a private ``redis-server``, the platform simulator
(``iqra-gateway simulate-platform``) and the gateway (``iqra-gateway serve``). The clients live in this
process: raw JSON-protocol SignalR clients over Tornado WebSockets (skipping negotiation), so the client
side costs as little as possible.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tornado.httpclient

ROOT = Path(__file__).resolve().parent.parent
API_TOKEN = "bench-api-token"
WEBHOOK_TOKEN = "bench-webhook-token"
CAP = 10
RS = "\x1e"
BODY = {
    "campaignId": "CampA", "regionId": "eu", "transportType": 0, "dynamicVariables": {}, "metadata": {},
    "audioConfiguration": {"inputEncodingType": 1, "inputSampleRate": 16000, "inputBitsPerSample": 16,
                           "outputEncodingType": 1, "outputSampleRate": 16000, "outputBitsPerSample": 16},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


class Client(asyncio.Protocol):
    """One waiting widget: a hub connection registered for one request id.

    A minimal WebSocket client on an asyncio protocol (no task per connection, frames parsed in
    ``data_received``), so that 5,000 of them in this process add as little delay as possible to what
    is measured. It understands exactly what the server sends here: unfragmented, unmasked text frames.
    """

    def __init__(self, request_id: str, arrivals: list[float]) -> None:
        loop = asyncio.get_running_loop()
        self.request_id = request_id
        self._arrivals = arrivals
        self.ready: asyncio.Future[float] = loop.create_future()
        self.registered: asyncio.Future[Any] = loop.create_future()
        self._upgraded: asyncio.Future[None] = loop.create_future()
        self.position = 0
        self.position_at = 0.0
        self.conversation = ""
        self._buffer = b""
        self._text = ""
        self.transport: asyncio.Transport | None = None

    async def connect(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        assert self.transport is not None
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write((f"GET /sessionHub HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await asyncio.wait_for(self._upgraded, 30)
        self.send(json.dumps({"protocol": "json", "version": 1}) + RS)
        self.send(json.dumps({"type": 1, "invocationId": "1", "target": "Register",
                              "arguments": [self.request_id]}) + RS)
        result = await asyncio.wait_for(self.registered, 30)
        self.position = result["queuePosition"]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        header = bytearray([0x81])
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        else:
            header.append(0x80 | 126)
            header += struct.pack(">H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(bytes(header) + mask + masked)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self._buffer += data
        if not self._upgraded.done():
            head, sep, rest = self._buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self._upgraded.set_exception(RuntimeError(head.decode(errors="replace")))
                return
            self._buffer = rest
            self._upgraded.set_result(None)
        while len(self._buffer) >= 2:
            opcode, length = self._buffer[0] & 0x0F, self._buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(self._buffer) < 4:
                    return
                length, offset = struct.unpack(">H", self._buffer[2:4])[0], 4
            elif length == 127:
                if len(self._buffer) < 10:
                    return
                length, offset = struct.unpack(">Q", self._buffer[2:10])[0], 10
            if len(self._buffer) < offset + length:
                return
            payload, self._buffer = self._buffer[offset:offset + length], self._buffer[offset + length:]
            if opcode in (1, 2):  # aiosignalr answers the JSON handshake in a binary frame
                self._on_text(payload.decode(), now)

    def _on_text(self, text: str, now: float) -> None:
        self._text += text
        *frames, self._text = self._text.split(RS)
        for frame in frames:
            message = json.loads(frame)
            kind = message.get("type")
            if kind == 3 and not self.registered.done():
                if "error" in message:
                    self.registered.set_exception(RuntimeError(message["error"]))
                else:
                    self.registered.set_result(message["result"])
            elif kind == 1 and message["target"] == "SessionReady" and not self.ready.done():
                self.conversation = message["arguments"][0]["webSocketUrl"].split("/session/")[1].split("/")[0]
                self.ready.set_result(now)
            elif kind == 1 and message["target"] == "QueuePositionUpdated":
                self.position = message["arguments"][0]["queuePosition"]
                self.position_at = now
                self._arrivals.append(now)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Servers:
    """redis-server, simulator and gateway as subprocesses."""

    def __init__(self, workdir: Path, root: Path = ROOT) -> None:
        self.workdir = workdir
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis_port, self.sim_port, self.gw_port = free_port(), free_port(), free_port()

    def start(self) -> None:
        log = (self.workdir / "servers.log").open("wb")
        self.procs.append(subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--save", "",
                                            "--appendonly", "no", "--bind", "127.0.0.1"], stdout=log, stderr=log))
        config = {
            "AllowedOrigins": ["*"], "RedisConnectionString": f"redis://127.0.0.1:{self.redis_port}/0",
            "VoiceAiPlatform": {"ApiSecretToken": API_TOKEN, "BaseUrl": f"http://127.0.0.1:{self.sim_port}/api/v1/",
                                "Campaigns": {"CampA": {"BusinessId": "1", "WebCampaignId": "w",
                                                        "AllowedRegionIds": ["eu"]}}},
            "Security": {"WebhookApiToken": WEBHOOK_TOKEN},
            "Concurrency": {"MaxConcurrentSessions": CAP},
            "Queue": {"MaxLength": 100000, "RegisterTimeoutSeconds": 3600, "DisconnectGraceSeconds": 3600},
            # Every client is on 127.0.0.1: the per-address connection cap would refuse most of them.
            "Limits": {"MaxConnectionsPerIp": 0, "MaxConnections": 0},
        }
        path = self.workdir / "appsettings.json"
        path.write_text(json.dumps(config))
        python = sys.executable
        # ``python -m`` puts the working directory first on sys.path, ahead of PYTHONPATH: run from the root.
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        self.procs.append(subprocess.Popen(
            [python, "-m", "gateway", "--log-level", "warning", "simulate-platform", "--port", str(self.sim_port),
             "--webhook-url", f"http://127.0.0.1:{self.gw_port}/api/webhook/session-ended",
             "--webhook-token", WEBHOOK_TOKEN, "--api-token", API_TOKEN, "--call-seconds", "100000"],
            stdout=log, stderr=log, env=env, cwd=self.root))
        profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
        self.procs.append(subprocess.Popen(
            [python, *profile, "-m", "gateway", "--log-level", os.environ.get("BENCH_GATEWAY_LOG", "warning"), "serve", "--config", str(path),
             "--host", "127.0.0.1", "--port", str(self.gw_port), *self.serve_options()],
            stdout=log, stderr=log, env=env, cwd=self.root))

    def serve_options(self) -> list[str]:
        """More ``serve`` options (none here; ``bench_crowd.py`` runs ``--processes 2``)."""
        return []

    async def wait_ready(self, http: tornado.httpclient.AsyncHTTPClient) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                response = await http.fetch(f"http://127.0.0.1:{self.gw_port}/readyz", raise_error=False)
                if response.code == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("gateway did not start; see servers.log")

    def stop(self) -> None:
        # The gateway first, while Redis still answers its shutdown steps; then the simulator and Redis.
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def simulator_initiate_p50(sim_port: int, samples: int = 50) -> float:
    """The simulator's own latency for one initiate, as the gateway's platform client sees it."""
    from gateway.config import load_settings
    from gateway.model.request import SessionRequest
    from gateway.platform.client import PlatformClient

    settings = load_settings(data={
        "VoiceAiPlatform": {"ApiSecretToken": API_TOKEN, "BaseUrl": f"http://127.0.0.1:{sim_port}/api/v1/",
                            "Campaigns": {"CampA": {"BusinessId": "1", "WebCampaignId": "w",
                                                    "AllowedRegionIds": ["eu"]}}}}, environ={}).settings
    client = PlatformClient(settings.platform)
    request = SessionRequest.from_dict(BODY)
    times = []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            await client.initiate(settings.platform.campaigns["CampA"], request, "127.0.0.1")
            times.append(time.perf_counter() - started)
    finally:
        client.close()
    return statistics.median(times)


def latency_summary(latencies: list[float], during: list[bool]) -> dict[str, Any]:
    """Percentiles in ms, overall and split by whether a position round was arriving meanwhile."""
    def stats(values: list[float]) -> dict[str, float]:
        if not values:
            return {"n": 0}
        return {"n": len(values), "p50": 1000 * percentile(values, 50), "p90": 1000 * percentile(values, 90),
                "p99": 1000 * percentile(values, 99), "max": 1000 * max(values)}

    return {"all": stats(latencies), "round": stats([v for v, d in zip(latencies, during) if d]),
            "quiet": stats([v for v, d in zip(latencies, during) if not d]),
            "over_50ms": sum(1 for v in latencies if v > 0.050)}


async def run(waiting: int, samples: int, workdir: Path, root: Path = ROOT) -> dict[str, Any]:
    servers = Servers(workdir, root)
    servers.start()
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=64)
    clients: list[Client] = []
    base = f"http://127.0.0.1:{servers.gw_port}"
    try:
        await servers.wait_ready(http)

        async def request() -> dict[str, Any]:
            response = await http.fetch(base + "/api/session/request", method="POST", body=json.dumps(BODY),
                                        request_timeout=60, headers={"Content-Type": "application/json"})
            return json.loads(response.body)

        active = [await request() for _ in range(CAP)]
        conversations = [a["webSocketUrl"].split("/session/")[1].split("/")[0] for a in active]
        total = waiting + samples + 4
        queued = []
        for start in range(0, total, 50):
            queued += await asyncio.gather(*(request() for _ in range(min(50, total - start))))
        queued.sort(key=lambda q: q["queuePosition"])
        arrivals: list[float] = []
        clients = [Client(q["uniqueRequestId"], arrivals) for q in queued]
        started = time.perf_counter()
        for start in range(0, len(clients), 100):
            await asyncio.gather(*(c.connect("127.0.0.1", servers.gw_port) for c in clients[start:start + 100]))
        print(f"  {len(clients)} clients registered in {time.perf_counter() - started:.1f} s", flush=True)
        front = 0

        async def release(conversation: str) -> float:
            t0 = time.perf_counter()
            response = await http.fetch(base + "/api/webhook/session-ended", method="POST",
                                        headers={"X-Api-Token": WEBHOOK_TOKEN},
                                        body=json.dumps({"ConversationSessionId": conversation}))
            assert response.code == 200
            return t0

        # Positions: after a quiet second (coalescing), one release; time until every waiting client knows.
        spreads: list[float] = []
        firsts: list[float] = []
        for _ in range(3):
            await asyncio.sleep(2.0)  # quiet: no coalescing delay, no backlog from the previous round
            rest = clients[front + 1:]
            expected = {id(c): c.position - 1 for c in rest}
            t0 = await release(conversations.pop(0))
            await asyncio.wait_for(clients[front].ready, 30)
            conversations.append(clients[front].conversation)
            front += 1
            deadline = time.perf_counter() + 10
            while any(c.position != expected[id(c)] for c in rest) and time.perf_counter() < deadline:
                await asyncio.sleep(0.005)
            missing = sum(1 for c in rest if c.position != expected[id(c)])
            spreads.append(max(c.position_at for c in rest) - t0 if not missing else float("inf"))
            firsts.append(min(c.position_at for c in rest) - t0)
        # Webhook -> SessionReady at the front, one release at a time.
        latencies = []
        spans = []
        arrivals.clear()
        for _ in range(samples):
            t0 = await release(conversations.pop(0))
            t1 = await asyncio.wait_for(clients[front].ready, 30)
            latencies.append(t1 - t0)
            spans.append((t0, t1))
            conversations.append(clients[front].conversation)
            front += 1
        arrivals.sort()
        during = [bisect.bisect_left(arrivals, t0) < bisect.bisect_right(arrivals, t1) for t0, t1 in spans]
        sim = await simulator_initiate_p50(servers.sim_port)
        return {
            "p50_ms": 1000 * percentile(latencies, 50), "p99_ms": 1000 * percentile(latencies, 99),
            "p50_net_ms": 1000 * (percentile(latencies, 50) - sim), "p99_net_ms": 1000 * (percentile(latencies, 99) - sim),
            "sim_ms": 1000 * sim, "positions_s": max(spreads), "positions_runs": spreads, "first_runs": firsts,
            "split": latency_summary(latencies, during),
        }
    finally:
        for c in clients:
            c.close()
        http.close()
        servers.stop()


def _ms(stats: dict[str, float]) -> str:
    if not stats["n"]:
        return "none"
    return (f"n={stats['n']:.0f} p50 {stats['p50']:.1f} / p90 {stats['p90']:.1f} / p99 {stats['p99']:.1f} / "
            f"max {stats['max']:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waiting", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--samples", type=int, default=200, help="webhook->SessionReady samples per run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration, interleaved")
    parser.add_argument("--gateway-root", type=Path, nargs="+", default=[ROOT],
                        help="source trees to run the gateway from, alternately (default: this checkout)")
    parser.add_argument("--logs", default=None, help="keep the servers' logs in this folder")
    args = parser.parse_args()
    table: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.logs:
            Path(args.logs).mkdir(parents=True, exist_ok=True)
            tmp = args.logs
        for attempt in range(1, args.repeat + 1):
            for waiting in args.waiting:
                for root in args.gateway_root:
                    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                    print(f"{waiting} waiting clients, gateway from {root}, run {attempt} "
                          f"(load average before: {load} on {os.cpu_count()} cores):", flush=True)
                    result = asyncio.run(run(waiting, args.samples, Path(tmp), root.resolve()))
                    split = result["split"]
                    print(f"  webhook -> SessionReady: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms "
                          f"(minus the simulator's initiate p50 {result['sim_ms']:.1f} ms: "
                          f"p50 {result['p50_net_ms']:.1f} ms, p99 {result['p99_net_ms']:.1f} ms); "
                          f"{split['over_50ms']} of {args.samples} over 50 ms")
                    print(f"    during a position round: {_ms(split['round'])}")
                    print(f"    quiet:                   {_ms(split['quiet'])}")
                    runs = ", ".join(f"{s * 1000:.0f}" for s in result["positions_runs"])
                    firsts = ", ".join(f"{s * 1000:.0f}" for s in result["first_runs"])
                    print(f"  all {waiting} positions delivered after one release: worst "
                          f"{result['positions_s'] * 1000:.0f} ms (runs: {runs} ms; first client served after "
                          f"{firsts} ms)", flush=True)
                    table.append(f"| {root.name or root} | {waiting:,} | {load} | {result['p50_ms']:.1f} / "
                                 f"{result['p99_ms']:.1f} | {split['over_50ms']} | "
                                 f"{split['round'].get('p99', float('nan')):.1f} | "
                                 f"{split['quiet'].get('p99', float('nan')):.1f} | {runs} |")
    print("\n| gateway | waiting | load avg | SessionReady p50 / p99 ms | >50 ms | p99 during rounds | "
          "p99 quiet | all positions after one release (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
