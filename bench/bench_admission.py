"""Benchmark: ``POST /api/session/request`` on the queued and admitted paths, against a baseline.

Run: ``.venv/bin/python bench/bench_admission.py [--duration 5] [--connections 32]``

It starts a private ``redis-server``, the platform simulator, the gateway (``iqra-gateway serve``) and the
baseline server (a bare Tornado handler doing one EVALSHA) as separate processes, drives each with the same
closed-loop client, and prints requests/s, p50/p99 and the ratios. It also counts the Redis commands the
gateway sends per admission decision (from ``INFO commandstats``), which must be exactly one EVALSHA.
Figures vary between machines and runs; the ratios measured in one run are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from loadgen import build_request, run_load  # noqa: E402
from redis_process import RedisProcess, free_port  # noqa: E402

BODY = json.dumps({
    "campaignId": "BenchCampaign", "regionId": "local", "transportType": 0, "clientIdentifier": None,
    "dynamicVariables": {"name": "bench"}, "metadata": {"source": "bench"},
    "audioConfiguration": {"inputEncodingType": 1, "inputSampleRate": 16000, "inputBitsPerSample": 16,
                           "outputEncodingType": 1, "outputSampleRate": 16000, "outputBitsPerSample": 16},
}).encode()


def _wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited early with {proc.returncode}")
            continue
        if needle in line:
            return
    raise RuntimeError(f"no {needle!r} within {timeout} s")


def _spawn(args: list[str], needle: str) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    _wait_for_line(proc, needle)
    return proc


def _commandstats(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        return {name: int(stats["calls"]) for name, stats in client.info("commandstats").items()}
    finally:
        client.close()


def _config(path: Path, *, redis_url: str, sim_port: int, cap: int) -> None:
    path.write_text(json.dumps({
        "RedisConnectionString": redis_url,
        "VoiceAiPlatform": {"ApiSecretToken": "bench-token", "BaseUrl": f"http://127.0.0.1:{sim_port}/api/v1/",
                            "Campaigns": {"BenchCampaign": {"BusinessId": "1", "WebCampaignId": "w",
                                                            "AllowedRegionIds": ["local"]}}},
        "Security": {"WebhookApiToken": "bench-webhook"},
        "Concurrency": {"MaxConcurrentSessions": cap},
        "Queue": {"MaxLength": 10_000_000},
    }))


async def _measure(port: int, label: str, *, duration: float, connections: int):  # type: ignore[no-untyped-def]
    request = build_request("POST", "127.0.0.1", port, "/api/session/request", BODY,
                            {"Content-Type": "application/json"})
    result = await run_load("127.0.0.1", port, lambda: request, connections=connections, duration=duration)
    print(result.summary(label), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    server = RedisProcess()
    server.start()
    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="iqra-bench-"))
    try:
        py = sys.executable
        sim_port, queued_port, admitted_port, base_port = (free_port() for _ in range(4))
        procs.append(_spawn([py, "-m", "gateway", "simulate-platform", "--port", str(sim_port),
                             "--webhook-url", f"http://127.0.0.1:{admitted_port}/api/webhook/session-ended",
                             "--webhook-token", "bench-webhook", "--api-token", "bench-token",
                             "--call-seconds", "3600"], "listening"))
        queued_db, admitted_db = server.url[:-1] + "1", server.url[:-1] + "2"
        _config(tmp / "queued.json", redis_url=queued_db, sim_port=sim_port, cap=0)
        _config(tmp / "admitted.json", redis_url=admitted_db, sim_port=sim_port, cap=1_000_000)
        procs.append(_spawn([py, "-m", "gateway", "--log-level", "warning", "serve", "--config",
                             str(tmp / "queued.json"), "--host", "127.0.0.1", "--port", str(queued_port)], "listening"))
        procs.append(_spawn([py, "-m", "gateway", "--log-level", "warning", "serve", "--config",
                             str(tmp / "admitted.json"), "--host", "127.0.0.1", "--port", str(admitted_port)], "listening"))
        procs.append(_spawn([py, str(ROOT / "bench" / "baseline_server.py"), "--port", str(base_port),
                             "--redis-url", server.url], "listening"))

        print(f"POST /api/session/request, {args.connections} connections, {args.duration:.0f} s each")
        baseline = asyncio.run(_measure(base_port, "baseline (Tornado + 1 EVALSHA)", duration=args.duration,
                                        connections=args.connections))
        before = _commandstats(server.url)
        queued = asyncio.run(_measure(queued_port, "gateway, queued path (202)", duration=args.duration,
                                      connections=args.connections))
        after = _commandstats(server.url)
        admitted = asyncio.run(_measure(admitted_port, "gateway, admitted path (200)", duration=args.duration,
                                        connections=args.connections))
        # Round trips per decision: every command the queued run sent, over the requests it answered
        # (warm-up requests included, so count them from the queue length the run left behind).
        queued_total = redis.Redis.from_url(queued_db).zcard("iqra:queue")
        sent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        sent = {k: v for k, v in sent.items() if v}
        print()
        print(f"queued / baseline throughput:   {queued.rps / baseline.rps:.2f}x  (target >= 0.80)")
        print(f"admitted / baseline throughput: {admitted.rps / baseline.rps:.2f}x  (admitted also calls the platform)")
        print(f"Redis commands during the queued run: {sent}")
        evalsha = sent.get("cmdstat_evalsha", 0)
        if queued_total:
            print(f"EVALSHA per queued admission decision: {evalsha / queued_total:.3f} "
                  f"({evalsha} over {queued_total} queued entries)")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.close()


if __name__ == "__main__":
    main()
