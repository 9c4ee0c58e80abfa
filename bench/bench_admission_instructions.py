"""Benchmark: instructions per request of the queued path against the baseline, the load-independent
complement of ``bench_admission.py``'s throughput ratio.

Run: ``.venv/bin/python bench/bench_admission_instructions.py [--requests 2000] [--warmup 500]
[--connections 32] [--repeat 1]`` (a few minutes; needs ``valgrind``).

Why: ``bench_admission.py`` compares requests per second of the gateway's queued path with a baseline (a
bare Tornado handler doing one EVALSHA), alternating the two; on this shared two-core machine each moves by
a quarter from run to run with whatever else runs, so a ratio near the 0.8x the issue asks for cannot be
told from its noise. Both servers are single-threaded and CPU-bound at saturation, so their throughput
ratio is about the inverse of their CPU per request; this script counts the latter exactly. Each server
(``bench_admission.py --serve-gateway`` with the same configuration as there, dispatcher timer quiet, cap 0;
and ``baseline_server.py``) runs under ``valgrind --tool=callgrind`` with its own ``redis-server``, gets
``--warmup`` requests, has its counters zeroed, then answers exactly ``--requests`` requests of the same
body from ``--connections`` closed-loop connections, and its dump's total ``Ir`` per request is the figure.

What it is not: callgrind counts user-space instructions, not system calls, cache misses or waits, and
valgrind runs the server fifty times slower, so more requests are in flight in each loop turn than at full
speed. The figure says what the code costs; the throughput run says what the machine made of it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the product packages and the tests harness (tests.harness)
sys.path.insert(0, str(ROOT / "bench"))

from bench_admission import BODY, QUIET_DISPATCH_INTERVAL, Processes, _config  # noqa: E402
from bench_protection_instructions import CALLGRIND, _callgrind_control, _dump_total  # noqa: E402
from loadgen import build_request, run_load  # noqa: E402

from tests.harness.redis_process import RedisProcess, free_port  # noqa: E402

#: Never called: the queued path (cap 0) does not reach the platform.
UNUSED_PLATFORM_PORT = 9


def _drive(port: int, count: int, connections: int) -> dict[int, int]:
    """Exactly ``count`` session requests, closed loop; returns the status counts."""
    request = build_request("POST", "127.0.0.1", port, "/api/session/request", BODY,
                            {"Content-Type": "application/json"})
    left = count

    def source() -> bytes | None:
        nonlocal left
        if left == 0:
            return None
        left -= 1
        return request

    result = asyncio.run(run_load("127.0.0.1", port, source, connections=connections, duration=1e9, warmup=0))
    if result.requests != count:
        raise RuntimeError(f"{result.requests} answers for {count} requests")
    return result.statuses


def _measure(name: str, tmp: Path, args: argparse.Namespace, run: int) -> float:
    """A fresh server of kind ``name`` under callgrind: instructions per request over the measured window."""
    tag = f"{name}-{run}"
    out = tmp / f"callgrind.{tag}"
    redis_server = RedisProcess()
    procs = Processes(tmp)
    try:
        redis_server.start()
        port = free_port()
        if name == "queued":
            config = _config(tmp / f"{tag}.json", redis_url=redis_server.url, sim_port=UNUSED_PLATFORM_PORT, cap=0)
            command = [sys.executable, str(ROOT / "bench" / "bench_admission.py"), "--serve-gateway", str(config),
                       "--port", str(port), "--dispatch-interval", str(QUIET_DISPATCH_INTERVAL)]
        else:
            command = [sys.executable, str(ROOT / "bench" / "baseline_server.py"), "--port", str(port),
                       "--redis-url", redis_server.url]
        server = procs.spawn(tag, [*CALLGRIND, f"--callgrind-out-file={out}", *command], port,
                             timeout=args.startup_timeout)
        warm = _drive(port, args.warmup, args.connections)
        if set(warm) != {202}:
            raise RuntimeError(f"warm-up of {name}: statuses {warm}, expected only 202")
        _callgrind_control("-z", server.pid)
        started = time.monotonic()
        statuses = _drive(port, args.requests, args.connections)
        total = _dump_total(server.pid, out)
        print(f"run {run}, {name:<8} {total / args.requests:>12,.0f} Ir/request   "
              f"({time.monotonic() - started:.1f} s, statuses {dict(statuses)})", flush=True)
        return total / args.requests
    finally:
        procs.stop_all()
        redis_server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per run (default 2000)")
    parser.add_argument("--warmup", type=int, default=500, help="requests before the counters are zeroed")
    parser.add_argument("--connections", type=int, default=32, help="client connections (default 32, as "
                                                                     "bench_admission.py)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of the baseline/queued pair")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    args = parser.parse_args()

    print(f"POST /api/session/request under callgrind: {args.warmup} warm-up + {args.requests} measured requests "
          f"per run, {args.connections} connections, {args.repeat} repetition(s)", flush=True)
    figures: dict[str, list[float]] = {"baseline": [], "queued": []}
    with tempfile.TemporaryDirectory(prefix="bench-admission-ir-") as tmp:
        for run in range(1, args.repeat + 1):
            for name, runs in figures.items():
                runs.append(_measure(name, Path(tmp), args, run))
    baseline, queued = (statistics.median(figures[name]) for name in ("baseline", "queued"))
    print()
    print(f"queued / baseline instructions per request: {queued / baseline:.3f}x "
          f"(throughput at saturation about its inverse, {baseline / queued:.2f}x; target >= 0.80)")


if __name__ == "__main__":
    main()
