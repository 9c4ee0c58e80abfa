"""Where a waiting client's memory and set-up CPU go: one gateway in this process, a crowd outside it.

Run: ``.venv/bin/python bench/crowd_profile.py [--clients 2000] [--cpu FILE]``

Starts a private ``redis-server`` and the platform simulator as subprocesses (``bench_session_hub.Servers``)
and the gateway *in this process* (``serve``, one process), queues ``--clients`` requests and has a client
process (``crowd_clients``) negotiate, connect and ``Register`` them all. Then prints, per client:

* the process's ``VmRSS`` growth;
* the Python allocations that grew (``tracemalloc``, by line, the top 25);
* the objects that appeared, by type (``gc.get_objects``: count per client and ``sys.getsizeof`` bytes).

``--cpu FILE`` profiles the set-up with cProfile instead of tracing allocations (tracemalloc slows
everything), writes the stats to FILE and prints the top functions by own time and by cumulative time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import tornado.httpclient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_crowd import _queue, rss_kib  # noqa: E402
from bench_session_hub import CAP, Servers  # noqa: E402
from crowd_clients import ClientProcess, raise_open_files  # noqa: E402

from gateway.cli.serve import build_gateway, load_for_serve, settle_heap  # noqa: E402


class ServersWithoutGateway(Servers):
    """Redis and the simulator only: the gateway runs in this process."""

    def start(self) -> None:
        super().start()
        gateway = self.procs.pop()
        gateway.terminate()
        gateway.wait()


def type_census() -> tuple[Counter[str], Counter[str]]:
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__module__ + "." + type(obj).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


async def main(args: argparse.Namespace, workdir: Path) -> None:
    import os

    servers = ServersWithoutGateway(workdir)
    servers.start()
    settings = load_for_serve(str(workdir / "appsettings.json"))
    assert settings is not None
    gateway = build_gateway(settings)
    assert gateway is not None
    await gateway.start(port=servers.gw_port, host="127.0.0.1")
    settle_heap()
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=100)
    child = await ClientProcess.start()
    base = f"http://127.0.0.1:{servers.gw_port}"
    try:
        await _queue(http, base, CAP)
        queued = await _queue(http, base, 100 + args.clients)
        ids = [q["uniqueRequestId"] for q in queued]
        await child.call("open", clients=[[i, ids[i]] for i in range(100)], port=servers.gw_port)
        await asyncio.sleep(1.5)
        gc.collect()
        pid = [os.getpid()]
        counts0, sizes0 = type_census()
        rss0 = rss_kib(pid)
        full0 = gc.get_stats()[2]["collections"]
        profiler = cProfile.Profile() if args.cpu else None
        if profiler is not None:
            profiler.enable()
        else:
            tracemalloc.start(args.frames)
            snap0 = tracemalloc.take_snapshot()
        await child.call("open", clients=[[i, ids[i]] for i in range(100, len(ids))], port=servers.gw_port)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.cpu)
        await asyncio.sleep(1.5)
        if args.idle:
            cpu0 = time.process_time()
            print(f"idle for {args.idle} s (pid {os.getpid()}): sample it with py-spy now", flush=True)
            await asyncio.sleep(args.idle)
            print(f"idle CPU: {100 * (time.process_time() - cpu0) / args.idle:.1f} % of a core", flush=True)
        started = time.perf_counter()
        gc.collect()
        full = time.perf_counter() - started
        n = args.clients
        print(f"full garbage collections during the set-up: {gc.get_stats()[2]['collections'] - full0}")
        print(f"a full garbage collection now: {1000 * full:.0f} ms over {len(gc.get_objects()):,} tracked objects "
              f"(a pause of the whole process)")
        print(f"VmRSS growth: {(rss_kib(pid) - rss0) / n:.1f} KiB per client ({n} clients)")
        if profiler is None:
            snap1 = tracemalloc.take_snapshot()
            traced = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
            print(f"tracemalloc growth: {traced / n / 1024:.1f} KiB per client; top lines:")
            for stat in snap1.compare_to(snap0, "lineno")[:25]:
                frame = stat.traceback[0]
                print(f"  {stat.size_diff / n:8.0f} B {stat.count_diff / n:6.2f} blocks  {frame.filename}:{frame.lineno}")
            tracemalloc.stop()
        counts1, sizes1 = type_census()
        print("objects that appeared, per client (count, getsizeof bytes):")
        grown = sorted(((sizes1[k] - sizes0[k], counts1[k] - counts0[k], k) for k in counts1), reverse=True)
        for size, count, name in grown[:30]:
            print(f"  {count / n:6.2f} {size / n:8.0f} B  {name}")
        tasks = Counter(getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks())
        print("tasks by coroutine (count per client):")
        for name, count in tasks.most_common(8):
            print(f"  {count / n:6.2f}  {name}")
        if profiler is not None:
            stats = pstats.Stats(args.cpu)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(40)
    finally:
        await child.stop()
        http.close()
        await gateway.stop()
        servers.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--idle", type=float, default=0, help="then stay idle this many seconds, reporting CPU")
    parser.add_argument("--cpu", default=None, help="profile the set-up's CPU into this file instead")
    arguments = parser.parse_args()
    raise_open_files(3 * arguments.clients + 5000)
    json.dumps({})
    with tempfile.TemporaryDirectory(prefix="crowd-profile-") as tmp:
        asyncio.run(main(arguments, Path(tmp)))
