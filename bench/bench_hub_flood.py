"""Benchmark: connections flooding a hub with tiny invocations and never reading (issue 11, section 2).

Run from the checkout root::

    .venv/bin/python bench/bench_hub_flood.py                 # 6 connections x 30 MB, 15 s of flood
    .venv/bin/python bench/bench_hub_flood.py --connections 2 --megabytes 5 --flood-seconds 5

Every server is its own process: a private ``redis-server`` and a gateway-like hub server (this
script with ``--serve``): Tornado, the SignalR hub at ``/hub`` with the gateway's default
``HubOptions``, whose ``Register(id)`` makes one Redis call (``HGET``) as the gateway's does, and
``GET /healthz``. The clients live in this process: raw sockets that upgrade to a WebSocket (skipping
negotiation), complete the JSON handshake, then write frames of ~400 ``Register`` invocations each
(non-blocking ones, so the server owes them no answer: the worst case) until each has written its
share or the flood time is over. They never read; at the end they are dropped, which with their
unread bytes makes the kernel reset them, as a real flooding client's do.

Printed, against the idle baseline measured first:

* server memory: ``VmRSS`` at idle, the peak during the flood (sampled every 50 ms), and the growth;
  target: growth under 100 MB;
* ``/healthz`` latency at idle and during the flood (one request every 20 ms, each on a new connection,
  from a process of its own); target: p99 under 100 ms;
* how long Redis stays busy after the sockets were dropped: the time from the drop to the last change of
  its ``HGET`` call count (``INFO commandstats``, polled every 10 ms); target: under 1 s;
* how much each connection could write (back-pressure holds them: what they wrote sits in the kernels'
  socket buffers, a few MB per connection, not in the server) and how many invocations ran;
* the issue's literal reproduction: a 10 MB frame, refused (close 1009) after how many bytes.

``--signalr-root`` runs the server with the ``signalr`` package of another tree (say a checkout of an
older commit) for a before/after comparison; beware that an unbounded server can take gigabytes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

RS = b"\x1e"
HUB = "/hub"
HANDSHAKE = b'{"protocol":"json","version":1}' + RS
FRAME_BYTES = 32 * 1024  # under the 64 KiB transport buffer: every frame is a valid one
RSS_TARGET_MB = 100.0
HEALTH_P99_TARGET_MS = 100.0
REDIS_IDLE_TARGET_S = 1.0


# -- the server (``--serve``) ----------------------------------------------------------------------------


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
        routes, server = hub_routes(HUB, FloodHub)
        app = tornado.web.Application([*routes, (r"/healthz", Health)])
        http = tornado.httpserver.HTTPServer(app, max_body_size=1024 * 1024)
        http.listen(port, address="127.0.0.1")
        await server.start()
        print("listening", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the clients --------------------------------------------------------------------------------------


def ws_frame(payload: bytes) -> bytes:
    """One masked text frame (mask 0: XOR with zeros leaves the payload as it is)."""
    length = len(payload)
    if length < 126:
        head = bytes((0x81, 0x80 | length))
    elif length < 1 << 16:
        head = bytes((0x81, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + length.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def flood_frame() -> bytes:
    invocation = b'{"type":1,"target":"Register","arguments":["00000000-0000-4000-8000-000000000000"]}' + RS
    return ws_frame(invocation * (FRAME_BYTES // len(invocation)))


async def open_hub_socket(port: int) -> socket.socket:
    """A raw socket upgraded to a WebSocket on the hub, handshake sent, reading nothing more."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET {HUB} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(sock, 1)  # byte by byte: leave the handshake answer unread
        if not chunk:
            raise RuntimeError("the server closed during the upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {head!r}")
    await loop.sock_sendall(sock, ws_frame(HANDSHAKE))
    return sock


async def flood(sock: socket.socket, frame: bytes, budget: int, written: list[int], index: int) -> None:
    loop = asyncio.get_running_loop()
    while written[index] < budget:
        await loop.sock_sendall(sock, frame)
        written[index] += len(frame)


# -- the measurements -----------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def sample_rss(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(rss_kib(pid))
        await asyncio.sleep(0.05)


def probe_health(port: int, seconds: float) -> list[float]:
    """GET /healthz every 20 ms for ``seconds``, each on a fresh connection; latencies in ms from
    connect to the whole answer. Runs in its own process, so the flooding clients' work does not
    delay it."""
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        latencies.append((time.perf_counter() - started) * 1000)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"/healthz answered {answer[:40]!r}")
        time.sleep(0.02)
    return latencies


async def start_probe(port: int, seconds: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--probe", "--port", str(port), "--seconds", str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )


async def probe_result(process: asyncio.subprocess.Process) -> list[float]:
    out, _ = await process.communicate()
    return list(json.loads(out))


async def hget_calls(redis_client: Any) -> int:
    stats = await redis_client.info("commandstats")
    return int(stats.get("cmdstat_hget", {}).get("calls", 0))


async def redis_quiet_after(redis_client: Any, since: float, quiet: float = 2.0, limit: float = 60.0) -> float:
    """Seconds from ``since`` to the last change of the HGET count, once it held still for ``quiet`` s."""
    last_value = await hget_calls(redis_client)
    last_change = since
    while True:
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        value = await hget_calls(redis_client)
        if value != last_value:
            last_value, last_change = value, now
        elif now - last_change >= quiet or now - since > limit:
            return last_change - since


async def oversized_frame(port: int) -> tuple[int, int | None]:
    """Send a 10 MB frame; returns the bytes written before the server refused it, and its close code."""
    loop = asyncio.get_running_loop()
    sock = await open_hub_socket(port)
    message = memoryview(ws_frame(b"x" * 10_000_000))
    progress = [0]

    async def send() -> None:
        for start in range(0, len(message), 65536):
            await loop.sock_sendall(sock, message[start:start + 65536])
            progress[0] = min(len(message), start + 65536)

    sender = asyncio.ensure_future(send())
    data = b""
    code = None
    try:
        while code is None:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
            if not chunk:
                break
            data += chunk
            code = _close_code(data)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        sock.close()
    return progress[0], code


def _close_code(data: bytes) -> int | None:
    """The code of the first close frame in ``data`` (unmasked server frames), if one is complete."""
    offset = 0
    while offset + 2 <= len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        header = 2
        if length == 126:
            length, header = int.from_bytes(data[offset + 2:offset + 4], "big"), 4
        elif length == 127:
            length, header = int.from_bytes(data[offset + 2:offset + 10], "big"), 10
        if offset + header + length > len(data):
            return None
        if opcode == 0x8:
            return int.from_bytes(data[offset + header:offset + header + 2], "big")
        offset += header + length
    return None


# -- the run --------------------------------------------------------------------------------------------


@dataclass
class Figures:
    rss_idle_kib: int = 0
    rss_peak_kib: int = 0
    health_idle: list[float] = field(default_factory=list)
    health_flood: list[float] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    invocations: int = 0
    redis_busy_after_close_s: float = 0.0
    oversized_sent: int = 0
    oversized_code: int | None = None


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def measure(args: argparse.Namespace, port: int, pid: int, redis_url: str) -> Figures:
    import redis.asyncio

    figures = Figures()
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        # Warm-up: one connection and one Register, so imports and first-use costs are paid before the baseline.
        warm = await open_hub_socket(port)
        await asyncio.get_running_loop().sock_sendall(warm, flood_frame())
        warm.close()
        figures.health_idle = await probe_result(await start_probe(port, args.idle_seconds))
        figures.rss_idle_kib = rss_kib(pid)

        sockets = [await open_hub_socket(port) for _ in range(args.connections)]
        calls_before = await hget_calls(client)
        figures.written = [0] * len(sockets)
        frame = flood_frame()
        stop = asyncio.Event()
        rss: list[int] = []
        sampler = asyncio.ensure_future(sample_rss(pid, rss, stop))
        probe = await start_probe(port, args.flood_seconds)
        budget = int(args.megabytes * 1_000_000)
        floods = [asyncio.ensure_future(flood(s, frame, budget, figures.written, i)) for i, s in enumerate(sockets)]
        figures.health_flood = await probe_result(probe)
        stop.set()
        await sampler
        for task in floods:
            task.cancel()
        await asyncio.gather(*floods, return_exceptions=True)
        figures.rss_peak_kib = max(rss)
        dropped = time.perf_counter()
        for sock in sockets:
            sock.close()  # unread bytes wait in it: the kernel resets the connection
        figures.redis_busy_after_close_s = await redis_quiet_after(client, dropped)
        figures.invocations = await hget_calls(client) - calls_before
        figures.oversized_sent, figures.oversized_code = await oversized_frame(port)
    finally:
        await client.aclose()
    return figures


def report(args: argparse.Namespace, f: Figures) -> str:
    growth_mb = (f.rss_peak_kib - f.rss_idle_kib) / 1024
    idle_p50, idle_p99 = percentile(f.health_idle, 50), percentile(f.health_idle, 99)
    flood_p50, flood_p99 = percentile(f.health_flood, 50), percentile(f.health_flood, 99)
    written = [w / 1_000_000 for w in f.written]

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    return "\n".join([
        f"Hub flood: {args.connections} connections x {args.megabytes:g} MB of Register invocations, "
        f"{args.flood_seconds:g} s, never reading",
        f"server RSS: idle {f.rss_idle_kib / 1024:.1f} MB, peak during flood {f.rss_peak_kib / 1024:.1f} MB, "
        f"growth {growth_mb:.1f} MB (target < {RSS_TARGET_MB:g} MB: {verdict(growth_mb < RSS_TARGET_MB)})",
        f"/healthz: idle p50 {idle_p50:.1f} ms p99 {idle_p99:.1f} ms ({len(f.health_idle)} requests); during flood "
        f"p50 {flood_p50:.1f} ms p99 {flood_p99:.1f} ms max {max(f.health_flood):.1f} ms ({len(f.health_flood)} "
        f"requests) (target p99 < {HEALTH_P99_TARGET_MS:g} ms: {verdict(flood_p99 < HEALTH_P99_TARGET_MS)})",
        f"Redis busy after the sockets were dropped: {f.redis_busy_after_close_s:.3f} s "
        f"(target < {REDIS_IDLE_TARGET_S:g} s: {verdict(f.redis_busy_after_close_s < REDIS_IDLE_TARGET_S)})",
        f"written per connection before the flood ended: min {min(written):.2f} MB, "
        f"median {statistics.median(written):.2f} MB, max {max(written):.2f} MB of {args.megabytes:g} MB; "
        f"invocations run: {f.invocations} ({f.invocations / args.flood_seconds:.0f}/s)",
        f"a 10 MB frame: closed with code {f.oversized_code} while its sender was still writing it "
        f"({f.oversized_sent / 1_000_000:.1f} of 10 MB had left the client, into the kernels' buffers)",
    ])


async def run(args: argparse.Namespace) -> Figures:
    from redis_process import RedisProcess, free_port

    redis_server = RedisProcess()
    redis_server.start()
    port = free_port()
    env = dict(os.environ)
    roots = [str(args.signalr_root)] if args.signalr_root else []
    env["PYTHONPATH"] = os.pathsep.join([*roots, str(ROOT), env.get("PYTHONPATH", "")])
    log = tempfile.TemporaryFile()  # the server's log (its warnings about the 10 MB frame, say)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--port", str(port), "--redis", redis_server.url],
        stdout=subprocess.PIPE, stderr=log, env=env, cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(server.stdout.readline), 30)
        if b"listening" not in line:
            log.seek(0)
            raise RuntimeError(f"the hub server did not start: {log.read()[-2000:].decode(errors='replace')}")
        return await measure(args, port, server.pid, redis_server.url)
    finally:
        server.terminate()
        server.wait(10)
        log.close()
        redis_server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=6)
    parser.add_argument("--megabytes", type=float, default=30.0, help="what each connection tries to write")
    parser.add_argument("--flood-seconds", type=float, default=15.0)
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="of the idle baseline")
    parser.add_argument("--signalr-root", type=Path, default=None, help="serve the signalr package of this tree")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port, args.redis)
        return 0
    if args.probe:
        print(json.dumps(probe_health(args.port, args.seconds)))
        return 0
    figures = asyncio.run(run(args))
    print(report(args, figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures.__dict__, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
