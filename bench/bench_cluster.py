"""Benchmark: the admission decisions per second that one Redis primary sustains for the gateway's scripts, the
ceiling of one deployment on a Redis Cluster (all its state lives in one slot, so one primary serves it).

Run: ``.venv/bin/python bench/bench_cluster.py [--decisions 120000] [--workers 3] [--depth 64] [--rounds 1]
[--limits] [--plain] [--replicas 1]``

The cluster is the tests' (:mod:`tests.harness.cluster`: three primaries with a replica each, on loopback). The
callers run the real ``admit`` script (``gateway/admission/lua/admit.lua`` with its libraries) with the keys and
arguments :class:`gateway.admission.store.AdmissionStore` builds for a real request (the deployment's hash-tagged
keys, an epoch, a nonce, and with ``--limits`` a client's and an IP's rate limits), one distinct request per
call. The cap is full, so every call is the crowd's decision: queue the request at the back (``queued``). The
calls are built and packed before the clock starts; then each worker process sends them on one connection to the
slot's owner, ``--depth`` at a time (a pipeline), so that the callers cost Redis's single thread little besides
the scripts: the figure is the primary's, with its CPU (``INFO cpu``) near 100 % of one core. ``--plain`` runs
the same on a plain ``redis-server`` (the keys without the hash tag), for comparison; either has one replica
of the measured primary unless ``--replicas 0``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hiredis
import redis
import redis.asyncio as aioredis

from gateway.admission.keys import KeySpace
from gateway.admission.store import AdmissionStore
from gateway.admission.types import Caps
from gateway.redis.cluster import slot_of
from ratelimit.plan import LimitPlan
from tests.harness.cluster import ClusterDeployment
from tests.harness.redis_process import RedisProcess

EPOCH = "bench-epoch"
CAP = 100
#: A request's entry data, about the size the gateway stores (campaign, visitor, address, audio settings).
DATA = {"campaign": "CampA", "clientIdentifier": "visitor-000000_203.0.113.7", "ip": "203.0.113.7", "region": "eu",
        "audioInput": {"encoding": "pcm16", "sampleRate": 16000, "channels": 1},
        "audioOutput": {"encoding": "pcm16", "sampleRate": 24000, "channels": 1}, "metadata": {"page": "/landing"}}


class _Captured(Exception):
    """Carries one call's keys and arguments out of :meth:`_Recorder._run`."""

    def __init__(self, command: tuple[Any, ...]) -> None:
        super().__init__("captured")
        self.command = command


class _Recorder(AdmissionStore):
    """The store's own argument building; the call it would make is captured instead of sent."""

    async def _run(self, operation: str, args: Any, extra_keys: Any = None) -> Any:
        keys = (*self._shared_keys, *(extra_keys or ()))
        script = self._scripts[operation]
        raise _Captured(("EVALSHA", script.sha, len(keys), *keys, str(time.time()), *args))


async def _commands(prefix: str, first: int, count: int, limits: bool) -> tuple[list[bytes], str]:
    """``count`` packed admit calls, of requests ``first``..; and the script's source."""
    space = KeySpace(prefix=prefix)
    recorder = _Recorder(aioredis.Redis(), key_prefix=prefix, epoch=lambda: EPOCH)
    plan = LimitPlan(key_prefix=space.rate_limits, hourly=10, daily=50, concurrency=1, per_ip_hourly=100,
                     per_ip_daily=500, per_ip_concurrency=10) if limits else None
    packed = []
    for n in range(first, first + count):
        request_id = f"bench-{n:09d}"
        call = None
        if plan is not None:
            call = plan.acquire_call(request_id, client_key=f"visitor-{n}", ip=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
                                     now_ms=int(time.time() * 1000), hold_ms=300_000)
        try:
            await recorder.admit(request_id=request_id, campaign="CampA", data=DATA, caps=Caps(global_cap=CAP),
                                 pending_lease_seconds=15, max_queue_length=10_000_000, limits=call)
        except _Captured as captured:
            packed.append(hiredis.pack_command(captured.command))
    return packed, recorder._scripts["admit"].script


def _connect(port: int, source: str) -> tuple[socket.socket, Any]:
    """A connection to the primary with the script loaded, and its reply reader."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = hiredis.Reader()
    sock.sendall(hiredis.pack_command(("SCRIPT", "LOAD", source)))
    reply = False
    while reply is False:
        reader.feed(sock.recv(65536))
        reply = reader.gets()
    return sock, reader


def _send(sock: socket.socket, reader: Any, commands: list[bytes], depth: int) -> dict[str, int]:
    """Send ``commands``, ``depth`` at a time; how many got each outcome."""
    outcomes: dict[str, int] = {}
    for offset in range(0, len(commands), depth):
        batch = commands[offset:offset + depth]
        sock.sendall(b"".join(batch))
        pending = len(batch)
        while pending:
            reply = reader.gets()
            if reply is False:
                reader.feed(sock.recv(1 << 20))
                continue
            pending -= 1
            outcome = reply[0].decode() if isinstance(reply, list) else f"error: {reply}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def _worker(port: int, prefix: str, first: int, count: int, depth: int, limits: bool,
            ready: Any, start: Any, results: Any) -> None:
    commands, source = asyncio.run(_commands(prefix, first, count, limits))
    sock, reader = _connect(port, source)
    ready.wait()
    start.wait()
    cpu, wall = time.process_time(), time.perf_counter()
    outcomes = _send(sock, reader, commands, depth)
    results.put((len(commands), time.process_time() - cpu, time.perf_counter() - wall, outcomes))
    sock.close()


def _redis_cpu(port: int) -> float:
    with redis.Redis(port=port) as client:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _prepare(port: int, prefix: str, limits: bool) -> None:
    """The deployment's state before the crowd: an epoch, and the cap taken (every call then queues)."""
    with redis.Redis(port=port) as client:
        client.set(KeySpace(prefix=prefix).admission.epoch, EPOCH)
    commands, source = asyncio.run(_commands(prefix, 0, CAP, limits))
    sock, reader = _connect(port, source)
    outcomes = _send(sock, reader, commands, 1)
    sock.close()
    assert outcomes == {"admitted": CAP}, outcomes


def run(port: int, prefix: str, label: str, args: argparse.Namespace) -> None:
    _prepare(port, prefix, args.limits)
    for round_ in range(args.rounds):
        _round(port, prefix, label, args, first=CAP + round_ * args.decisions)


def _round(port: int, prefix: str, label: str, args: argparse.Namespace, *, first: int) -> None:
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Barrier(args.workers + 1), context.Event(), context.Queue()
    share = args.decisions // args.workers
    workers = [context.Process(target=_worker, args=(port, prefix, first + i * share, share, args.depth, args.limits,
                                                     ready, start, results)) for i in range(args.workers)]
    for worker in workers:
        worker.start()
    ready.wait()  # every worker has built its calls and loaded the script
    cpu_before, wall = _redis_cpu(port), time.perf_counter()
    start.set()
    done = [results.get() for _ in workers]
    wall = time.perf_counter() - wall
    redis_cpu = _redis_cpu(port) - cpu_before
    for worker in workers:
        worker.join()
    decisions = sum(count for count, _, _, _ in done)
    outcomes: dict[str, int] = {}
    for _, _, _, counted in done:
        for outcome, n in counted.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n
    client_cpu = sum(cpu for _, cpu, _, _ in done)
    # On a shared machine Redis does not always get its core: its CPU time per decision gives the ceiling of
    # a core of its own.
    print(f"{label:40s} {decisions / wall:7.0f} decisions/s at Redis CPU {100 * redis_cpu / wall:5.1f} %; "
          f"{1e6 * redis_cpu / decisions:4.1f} µs of Redis CPU per decision = {decisions / redis_cpu:6.0f}/s at 100 %; "
          f"callers {1e6 * client_cpu / decisions:3.1f} µs per decision; outcomes {dict(sorted(outcomes.items()))}")


def _wait_replicating(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with redis.Redis(port=port) as client:
        while client.info("replication").get("connected_slaves", 0) < 1 or \
                client.info("replication")["slave0"]["state"] != "online":
            if time.monotonic() > deadline:
                raise TimeoutError("the replica did not come online")
            time.sleep(0.05)  # a child process starting: nothing to wait on but its state


def main(args: argparse.Namespace) -> None:
    limits = (" with rate limits" if args.limits else "") + ("" if args.replicas else ", no replica")
    if args.plain:
        server = RedisProcess(extra_args=["--repl-diskless-sync-delay", "0"])
        server.start()
        replica = RedisProcess(extra_args=["--replicaof", "127.0.0.1", str(server.port)]) if args.replicas else None
        try:
            if replica is not None:
                replica.start()
                _wait_replicating(server.port)
            run(server.port, KeySpace().prefix, f"plain Redis{limits}", args)
        finally:
            if replica is not None:
                replica.close()
            server.close()
        return
    deployment = ClusterDeployment(replicas=args.replicas)
    deployment.start()
    try:
        space = KeySpace.for_store(cluster=True)
        owner = deployment.owner_port(slot_of(space.hash_tag or ""))
        run(owner, space.prefix, f"cluster, the slot's primary{limits}", args)
    finally:
        deployment.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=120_000, help="measured admit calls, over all workers")
    parser.add_argument("--workers", type=int, default=3, help="caller processes, one connection each")
    parser.add_argument("--depth", type=int, default=64, help="calls in flight per connection (a pipeline)")
    parser.add_argument("--limits", action="store_true", help="per-client and per-IP rate limits on every call")
    parser.add_argument("--rounds", type=int, default=1, help="measurements, one after the other (the queue grows)")
    parser.add_argument("--replicas", type=int, choices=(0, 1), default=1,
                        help="replicas of the primary (as a shard has; the primary sends them every write)")
    parser.add_argument("--plain", action="store_true", help="a plain redis-server instead of the cluster")
    main(parser.parse_args())
