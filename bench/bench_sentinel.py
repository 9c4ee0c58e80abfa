"""Benchmark: one EVALSHA through the store's client on a plain Redis and on one behind Sentinel, through the
gateway's fast path (:func:`gateway.redis.client.run_script`) and through redis-py's, and with
``Redis.WaitForReplicas: 1``.

Run: ``.venv/bin/python bench/bench_sentinel.py [--calls 20000] [--concurrency 50] [--rounds 2]``

The deployment is the tests' (:mod:`tests.harness.sentinel`: a primary, a replica, three sentinels on
loopback). The plain client talks to the same primary by its address, so both measure the same server. The
figure to trust on a shared machine is the client's CPU time per call (``time.process_time``); calls per
second move with whatever else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.redis.client import open_redis, run_script  # noqa: E402
from gateway.redis.replication import ReplicaWait  # noqa: E402
from tests.harness.sentinel import SentinelDeployment  # noqa: E402

SCRIPT = "return redis.call('INCR', KEYS[1])"


async def _measure(client, label: str, *, calls: int, concurrency: int, fast: bool,  # type: ignore[no-untyped-def]
                   wait: ReplicaWait | None = None) -> None:
    script = client.register_script(SCRIPT)
    await run_script(client, script, ["bench:counter"], [])  # loaded, connected, version checked

    async def worker() -> None:
        for _ in range(calls // concurrency):
            if fast:
                await run_script(client, script, ["bench:counter"], [], wait=wait)
            else:
                await script(keys=["bench:counter"], args=[])

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{label:28s} {calls / wall:8.0f} calls/s  {cpu / calls * 1e6:6.1f} µs client CPU per call")


async def main(args: argparse.Namespace) -> None:
    deployment = SentinelDeployment()
    deployment.start()
    try:
        plain = open_redis(f"redis://127.0.0.1:{deployment.primary.port}/0")
        sentinel = open_redis(deployment.url)
        options = {"calls": args.calls, "concurrency": args.concurrency}
        for _ in range(args.rounds):
            await _measure(plain, "plain, fast path", fast=True, **options)
            await _measure(plain, "plain, redis-py", fast=False, **options)
            await _measure(sentinel, "sentinel, fast path", fast=True, **options)
            await _measure(sentinel, "sentinel, redis-py", fast=False, **options)
            await _measure(sentinel, "sentinel, fast path + WAIT 1", fast=True, wait=ReplicaWait(1, 200), **options)
        await plain.aclose()
        await sentinel.aclose()
    finally:
        deployment.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
