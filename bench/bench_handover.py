"""Benchmark: what a hand-over between ``--processes`` workers costs a request (issue 11, item 5).

Run: ``.venv/bin/python bench/bench_handover.py [--requests 2000] [--repeat 3]`` (about 10 s).

``iqra-gateway serve --processes 2`` on a private ``redis-server``. One kept-alive HTTP/1.1 connection sends
``--requests`` hub GETs one after the other, each naming a connection id nobody holds (so each is a 404 by
the hub, the cheapest answer and the same work in both variants):

- **local**: every id carries the prefix of the worker that holds the TCP connection: no hand-over;
- **handed**: the prefixes alternate, so every request names the other worker: every request is handed over
  (socket and unread bytes via the parent) before it is answered.

Then the same requests **pipelined** in one write (what an abusive client could do to make the workers pass
the connection back and forth), time to the last answer. The figure is the mean time per request; the
difference between the variants is the hand-over's cost, in wall-clock time and in CPU time of the
gateway's processes (parent and workers, from ``/proc``; clock ticks, so only long runs are precise). The keep-alive cost that the hand-over avoids
(closing every connection after each answer, as before) is measured too: **reconnect**, a new TCP
connection per request (each routed by the parent).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the product packages and the tests harness (tests.harness)

from tests.harness.redis_process import RedisProcess, free_port  # noqa: E402
from tests.harness.stack import base_config  # noqa: E402


def _request(target: str, close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def _answers(stream, count: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(count):
        length = 0
        assert stream.readline().startswith(b"HTTP/1.1 404"), "expected the hub's 404"
        while (line := stream.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        stream.read(length)


def _negotiate_worker(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /sessionHub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        data = b""
        while b"connectionToken" not in data or not data.endswith(b"}"):
            data += sock.recv(4096)
    return json.loads(data.split(b"\r\n\r\n", 1)[1])["connectionToken"].split(".")[0]


def _cpu_seconds(parent: int) -> float:
    """CPU time (user + system) of the gateway: the parent and its workers."""
    pids = [parent, *map(int, Path(f"/proc/{parent}/task/{parent}/children").read_text().split())]
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class _Meter:
    """Wall-clock and gateway CPU per request of one variant."""

    def __init__(self, parent: int, requests: int) -> None:
        self.parent, self.requests = parent, requests

    def __enter__(self) -> _Meter:
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds(self.parent)
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = (time.perf_counter() - self.wall) / self.requests
        self.cpu = (_cpu_seconds(self.parent) - self.cpu) / self.requests


def measure(port: int, parent: int, requests: int) -> dict[str, _Meter]:
    near = _negotiate_worker(port)  # the next-but-one fresh connection reaches this worker (round-robin)
    far = _negotiate_worker(port)
    results = {}
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = sock.makefile("rb")
        for name, prefixes in (("local", (near, near)), ("handed", (far, near))):
            targets = [f"/sessionHub?id={prefixes[i % 2]}.nobody{i}" for i in range(requests)]
            with _Meter(parent, requests) as results[name]:
                for target in targets:
                    sock.sendall(_request(target))
                    _answers(stream, 1)
            with _Meter(parent, requests) as results[f"{name} pipelined"]:
                sock.sendall(b"".join(_request(t) for t in targets))
                _answers(stream, requests)
    with _Meter(parent, requests) as results["reconnect"]:
        for i in range(requests):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(_request(f"/sessionHub?id={near}.nobody{i}", close=True))
                _answers(sock.makefile("rb"), 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    redis = RedisProcess()
    redis.start()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = base_config()
        config["RedisConnectionString"] = redis.url
        (Path(tmp) / "appsettings.json").write_text(json.dumps(config))
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--log-level", "error", "serve", "--config", str(Path(tmp) / "appsettings.json"),
             "--host", "127.0.0.1", "--port", str(port), "--processes", "2"], cwd=ROOT, env={**os.environ})
        try:
            deadline = time.monotonic() + 30
            while True:  # a starting subprocess: nothing to wait on but its port
                try:
                    _negotiate_worker(port), _negotiate_worker(port)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the gateway did not start"
                    time.sleep(0.1)
            measure(port, gateway.pid, 200)  # warm-up
            for round_ in range(args.repeat):
                figures = measure(port, gateway.pid, args.requests)
                print(f"round {round_ + 1} (per request, wall / gateway CPU): " + ", ".join(
                    f"{k} {m.wall * 1e6:.0f} / {m.cpu * 1e6:.0f} us" for k, m in figures.items()), flush=True)
        finally:
            gateway.terminate()
            gateway.wait(30)
            redis.close()


if __name__ == "__main__":
    main()
