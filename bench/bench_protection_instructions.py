"""Benchmark: instructions per admission with every client protection enabled versus disabled (issue 5).

Run: ``.venv/bin/python bench/bench_protection_instructions.py [--requests 600] [--warmup 200]
[--requests-per-client 1] [--repeat 2] [--connections 8] [--keep]`` (about 5 minutes with the defaults;
needs ``valgrind``, whose ``callgrind_control`` does the zeroing and dumping).

Why: the deterministic complement of ``bench_protection.py``. On this shared two-core machine one gateway's
throughput moves by +-20 % between rounds, so a throughput ratio cannot resolve the few percent that the
protections cost. Here the gateway process (``bench_admission.py --serve-gateway``, dispatcher timer quiet,
queued path) and its private ``redis-server`` both run under valgrind's callgrind, and the figure is the
number of instructions each executes per ``POST /api/session/request``. A count of CPU work does not move
with the machine's load: repetitions agree to about a percent or better.

What it is not: throughput. Callgrind counts user-space instructions (of every thread of the process), not
cache misses, system calls or waits. On this machine the gateway process is usually the bottleneck (one core),
while Redis and the load generator share the other, so the gateway's on/off ratio is the one that predicts
throughput (roughly its inverse), and Redis's says how much headroom the protections take from Redis.

Configurations are ``bench_protection.py``'s ``_config``: **off** (no anonymizer database, no rate limits)
and **on** (BlockVpn/Proxy/Datacenter/Tor against the synthetic 20,000-network database, every client and
per-IP limit set too high to refuse); every answer must be a 202, so both do the same admission work. Two
departures, both because valgrind stretches a run about 50-fold in wall-clock time, which inflates whatever
runs on a timer: ``Queue.RegisterTimeoutSeconds`` is a day (with the default 60 s the reaper would remove
the warm-up's never-registered entries during the measurement), and Redis runs with ``--hz 1`` (at ``hz 10``
its ``serverCron`` reads jemalloc's statistics ten times a second, which alone was over a tenth of Redis's
count; ``--redis-hz 10`` restores it).

For each repetition and each variant, fresh processes: ``redis-server`` and the gateway start under
``valgrind --tool=callgrind``; ``--warmup`` requests; counters zeroed (``callgrind_control -z``); an idle
sample of ``--idle-seconds``; exactly ``--requests`` requests from a closed-loop client; a dump
(``callgrind_control -d``) whose total ``Ir`` divided by the request count is the **raw** figure; another
idle sample. Timers still run during the measurement (the gateway's reaper, position poll and heartbeats,
Redis's cron): the line of each run gives the idle rates, and the **net** figure subtracts the mean idle
rate times the measurement's length. Raw is the headline: its timer share is about 5 % in both variants and
processes, while the net figure inherits the short idle samples' noise (a timer fires once more or less).

Request number n (numbering continues across warm-up, measurement and repetitions, so no identifier is ever
used twice in a run) comes from client ``client-{n // K}`` at address ``n // K`` of ``clean_addresses``,
with K = ``--requests-per-client``: K = 1 is a new client and address per request (neither the geo verdict
cache nor a warm rate-limit key flatters the figure), K = 3 the "returning clients" case. Both variants get
the same sequence. ``PYTHONHASHSEED`` is fixed so that every gateway lays out its dicts alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the product packages and the tests harness (tests.harness)
sys.path.insert(0, str(ROOT / "bench"))

from bench_admission import QUIET_DISPATCH_INTERVAL, Processes  # noqa: E402
from bench_geo import build_database  # noqa: E402
from bench_protection import _config, clean_addresses, session_request  # noqa: E402
from loadgen import run_load  # noqa: E402
from tests.harness.redis_process import RedisProcess, free_port  # noqa: E402

from gateway.queue.protection import RENEW_INTERVAL_SECONDS  # noqa: E402

VARIANTS = ("off", "on")
ROLES = ("gateway", "redis", "sum")
REGISTER_TIMEOUT_SECONDS = 86_400
#: Instructions only (no cache simulation): the cheapest callgrind mode, and the figure we want.
CALLGRIND = ["valgrind", "--tool=callgrind", "--collect-atstart=yes", "--cache-sim=no", "--branch-sim=no"]


def callgrind_redis(out_file: Path, hz: int) -> RedisProcess:
    """The tests' ``RedisProcess``, launched by callgrind (slow to answer its first PING)."""
    return RedisProcess(launcher=[*CALLGRIND, f"--callgrind-out-file={out_file}"], extra_args=["--hz", str(hz)],
                        probe_timeout=5.0)


def _callgrind_control(option: str, pid: int) -> None:
    done = subprocess.run(["callgrind_control", option, str(pid)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or "OK" not in done.stdout:
        raise RuntimeError(f"callgrind_control {option} {pid} failed: {done.stdout}{done.stderr}")


def _dump_total(pid: int, out_file: Path) -> int:
    """Dump ``pid``'s counters (which also zeroes them) and return the dump's total ``Ir``."""
    before = set(out_file.parent.glob(f"{out_file.name}.*"))
    _callgrind_control("-d", pid)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for dump in set(out_file.parent.glob(f"{out_file.name}.*")) - before:
            # ``totals:`` (``summary:`` in older formats) closes a complete dump.
            for line in dump.read_text(errors="replace").splitlines()[::-1]:
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise RuntimeError(f"no complete callgrind dump of pid {pid} appeared next to {out_file}")


def _request(port: int, n: int, addresses: list[str], per_client: int) -> bytes:
    return session_request(port, n // per_client, addresses)


def _drive(port: int, numbers: range, addresses: list[str], per_client: int, connections: int) -> dict[int, int]:
    """Exactly ``len(numbers)`` requests, closed loop; returns the status counts."""
    pending = iter(numbers)

    def source() -> bytes | None:
        n = next(pending, None)
        return None if n is None else _request(port, n, addresses, per_client)

    # No time limit and no warm-up window: the workers stop when the numbers run out.
    result = asyncio.run(run_load("127.0.0.1", port, source, connections=connections, duration=1e9, warmup=0))
    if result.requests != len(numbers):
        raise RuntimeError(f"{result.requests} answers for {len(numbers)} requests")
    return result.statuses


@dataclass(frozen=True, slots=True)
class Measurement:
    """Total ``Ir`` of the measured window per process, and each process's idle rate around it."""

    ir: dict[str, int]
    idle_ir_per_s: dict[str, float]
    requests: int
    seconds: float
    statuses: dict[int, int]
    startup_seconds: float

    def raw(self, role: str) -> float:
        """Instructions per request as counted, timers included."""
        if role == "sum":
            return self.raw("gateway") + self.raw("redis")
        return self.ir[role] / self.requests

    def net(self, role: str) -> float:
        """Instructions per request less what the idle rate would have run over the window: the timers' work
        grows with the window's length, which moves with the machine's load, the requests' does not."""
        if role == "sum":
            return self.net("gateway") + self.net("redis")
        return (self.ir[role] - self.idle_ir_per_s[role] * self.seconds) / self.requests

    def line(self, label: str) -> str:
        return (f"{label:<16} raw (net) Ir/request: gateway {self.raw('gateway'):>10,.0f} ({self.net('gateway'):,.0f})"
                f"   redis {self.raw('redis'):>8,.0f} ({self.net('redis'):,.0f})   sum {self.raw('sum'):>10,.0f} "
                f"({self.net('sum'):,.0f});  {self.seconds:4.1f} s, {self.requests / self.seconds:3.0f} req/s; "
                f"idle Ir/s gateway {self.idle_ir_per_s['gateway']:,.0f}, redis {self.idle_ir_per_s['redis']:,.0f}; "
                f"statuses {dict(sorted(self.statuses.items()))}; gateway start-up {self.startup_seconds:.0f} s")


def _measure(name: str, tmp: Path, database: Path, addresses: list[str], first: int, args: argparse.Namespace,
             run: int) -> Measurement:
    """Fresh Redis and gateway under callgrind: warm-up, idle sample, the measured requests, idle sample."""
    tag = f"{name}-{run}"
    redis_out, gateway_out = tmp / f"callgrind.redis-{tag}", tmp / f"callgrind.gateway-{tag}"
    server = callgrind_redis(redis_out, args.redis_hz)
    procs = Processes(tmp)
    try:
        server.start(timeout=args.startup_timeout)
        assert server.pid is not None
        config = tmp / f"{tag}.json"
        _config(config, redis_url=server.url, protected=name == "on", database=database)
        settings = json.loads(config.read_text())
        # Valgrind stretches a run 50-fold, so the default 60 s would let the reaper remove (and count) the
        # warm-up's entries, which never register, in the middle of the measurement.
        settings["Queue"]["RegisterTimeoutSeconds"] = REGISTER_TIMEOUT_SECONDS
        config.write_text(json.dumps(settings))
        port = free_port()
        started = time.monotonic()
        gateway = procs.spawn(f"gateway-{tag}", [
            *CALLGRIND, f"--callgrind-out-file={gateway_out}",
            sys.executable, str(ROOT / "bench" / "bench_admission.py"), "--serve-gateway", str(config),
            "--port", str(port), "--dispatch-interval", str(QUIET_DISPATCH_INTERVAL)],
            port, timeout=args.startup_timeout)
        startup = time.monotonic() - started
        pids = {"gateway": (gateway.pid, gateway_out), "redis": (server.pid, redis_out)}

        warm = _drive(port, range(first, first + args.warmup), addresses, args.requests_per_client,
                      args.connections)
        if set(warm) != {202}:
            raise RuntimeError(f"warm-up of {name}: statuses {warm}, expected only 202")

        def idle_rates() -> dict[str, float]:
            # Zeroed just before; a dump zeroes again, so the next count starts here.
            start = time.monotonic()
            time.sleep(args.idle_seconds)
            return {role: _dump_total(pid, out) / (time.monotonic() - start) for role, (pid, out) in pids.items()}

        for pid, _ in pids.values():
            _callgrind_control("-z", pid)
        idle_before = idle_rates()
        t0 = time.monotonic()
        numbers = range(first + args.warmup, first + args.warmup + args.requests)
        statuses = _drive(port, numbers, addresses, args.requests_per_client, args.connections)
        totals = {role: _dump_total(pid, out) for role, (pid, out) in pids.items()}
        seconds = time.monotonic() - t0
        idle_after = idle_rates()
        idle = {role: (idle_before[role] + idle_after[role]) / 2 for role in pids}
        if time.monotonic() - started > RENEW_INTERVAL_SECONDS:
            print(f"warning: the {name} gateway lived over {RENEW_INTERVAL_SECONDS:.0f} s, so its renewal of "
                  f"queued rate-limit units may have run inside the measurement", flush=True)
        return Measurement(ir=totals, idle_ir_per_s=idle, requests=args.requests, seconds=seconds,
                           statuses=statuses, startup_seconds=startup)
    finally:
        procs.stop_all()
        server.close()


def _spread(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"spread {(high - low) / statistics.mean(values) * 100:.3f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="measured requests per run (default 600)")
    parser.add_argument("--warmup", type=int, default=200, help="requests before the counters are zeroed")
    parser.add_argument("--requests-per-client", type=int, default=1, metavar="K",
                        help="consecutive requests from one client and address (default 1: all new)")
    parser.add_argument("--repeat", type=int, default=2, help="repetitions of the off/on pair (default 2)")
    parser.add_argument("--connections", type=int, default=8, help="client connections (default 8)")
    parser.add_argument("--idle-seconds", type=float, default=4.0,
                        help="idle samples before and after each measurement, to size what timers add (default 4)")
    parser.add_argument("--redis-hz", type=int, default=1,
                        help="redis-server's hz (default 1, see the docstring; Redis's own default is 10)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the callgrind dumps and logs (for callgrind_annotate) and print where")
    parser.add_argument("--startup-timeout", type=float, default=300.0,
                        help="seconds allowed for a process under valgrind to answer (default 300)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind (with callgrind_control) is not installed")

    # String hashing seeded alike in every gateway, so that dict and set layouts do not differ between runs.
    os.environ["PYTHONHASHSEED"] = "0"
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="iqra-bench-instructions-"))
    try:
        database = tmp / "anonymous.mmdb"
        build_database(database, random.Random(7), 20_000)
        per_run = args.warmup + args.requests
        total_requests = per_run * args.repeat
        addresses = clean_addresses(database, random.Random(11), -(-total_requests // args.requests_per_client))
        print(f"POST /api/session/request (queued path) under callgrind: {args.warmup} warm-up + {args.requests} "
              f"measured requests per run, {args.connections} connections, {args.requests_per_client} "
              f"request(s) per client and address, {args.repeat} repetition(s) of off/on", flush=True)
        results: dict[str, list[Measurement]] = {name: [] for name in VARIANTS}
        for run in range(args.repeat):
            for name in VARIANTS:
                # The same request numbers for both variants; later repetitions continue the numbering.
                m = _measure(name, tmp, database, addresses, run * per_run, args, run)
                results[name].append(m)
                print(m.line(f"run {run + 1}, {name}"), flush=True)

        print()
        for kind in ("raw", "net"):
            for name in VARIANTS:
                ms = results[name]
                print(f"{kind} {name:>3}: " + ";  ".join(
                    f"{role} {', '.join(f'{getattr(m, kind)(role):,.0f}' for m in ms)} "
                    f"({_spread([getattr(m, kind)(role) for m in ms])})" for role in ROLES))
        for kind in ("raw", "net"):
            for role in ROLES:
                ratios = [getattr(on, kind)(role) / getattr(off, kind)(role)
                          for off, on in zip(results["off"], results["on"], strict=True)]
                print(f"on / off instructions per request, {kind}, {role:<7}: {statistics.median(ratios):.4f}x "
                      f"(per repetition: {', '.join(f'{r:.4f}' for r in ratios)})")
        statuses: dict[str, Counter[int]] = {name: Counter() for name in VARIANTS}
        for name in VARIANTS:
            for m in results[name]:
                statuses[name].update(m.statuses)
        print(f"status counts: {{{', '.join(f'{n!r}: {dict(c)}' for n, c in statuses.items())}}}  "
              f"(must be only 202: both paths did the same work)")
        print(f"elapsed: {time.monotonic() - started:.0f} s")
        if any(set(c) != {202} for c in statuses.values()):
            sys.exit(1)
    finally:
        if args.keep:
            print(f"callgrind dumps and process logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
