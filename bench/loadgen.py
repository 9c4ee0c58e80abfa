"""A small closed-loop HTTP/1.1 load generator for the benchmarks.

``connections`` keep-alive connections each send one request, wait for the whole response, and send the
next, for ``duration`` seconds after a ``warmup``. Latency is measured per request. Raw asyncio streams keep
the client's own cost low, so that on a two-core machine the server, not the client, is what gets measured;
every figure is compared with a baseline measured by the same client in the same run.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

#: What a worker asks for its next request: the raw bytes, or ``None`` to stop that worker early.
RequestSource = Callable[[], "bytes | None | Awaitable[bytes | None]"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadResult:
    """Figures of one run.

    :param requests: responses received inside the measured window.
    :param total_requests: every response received, warm-up included (for per-request server counters).
    :param seconds: length of the measured window.
    :param statuses: status code -> count, measured window only.
    :param latencies_ms: one entry per measured response.
    """

    requests: int
    total_requests: int
    seconds: float
    statuses: dict[int, int]
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in ms (NaN when nothing was measured)."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index]

    def summary(self, label: str) -> str:
        return (f"{label:<36} {self.rps:8.0f} req/s   p50 {self.percentile(50):7.2f} ms   "
                f"p99 {self.percentile(99):7.2f} ms   statuses {dict(sorted(self.statuses.items()))}")


def build_request(method: str, host: str, port: int, path: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response with a ``Content-Length`` body (all the servers under test send one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
            break
    if length:
        await reader.readexactly(length)
    return status


async def run_load(host: str, port: int, make_request: RequestSource, *, connections: int = 32,
                   duration: float = 5.0, warmup: float = 1.0) -> LoadResult:
    """Drive ``host:port`` closed-loop; ``make_request`` may be sync or async and may return ``None``."""
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    total = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def worker() -> None:
        nonlocal total
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                request = make_request()
                if inspect.isawaitable(request):
                    request = await request
                t0 = time.perf_counter()
                if request is None or t0 >= stop_at:
                    return
                writer.write(request)
                status = await read_response(reader)
                t1 = time.perf_counter()
                total += 1
                if t0 >= measure_from:
                    statuses[status] += 1
                    latencies.append((t1 - t0) * 1000.0)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return LoadResult(requests=len(latencies), total_requests=total, seconds=duration, statuses=dict(statuses),
                      latencies_ms=latencies)
