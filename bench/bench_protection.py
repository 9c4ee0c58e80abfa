"""Benchmark: admission throughput with every client protection enabled versus disabled (issue 5).

Run: ``.venv/bin/python bench/bench_protection.py [--duration 5] [--rounds 3] [--connections 32]``

Two gateways (``iqra-gateway serve``) on one private ``redis-server`` (separate databases), both on the
queued path (cap 0) so that the platform is not part of the measurement:

* **off**: no anonymizer database, no rate limits;
* **on**: BlockVpn/Proxy/Datacenter/Tor against a synthetic 20,000-network Anonymous-IP database, plus
  hourly, daily and concurrency limits per client and per IP (set high enough never to refuse, so both
  gateways answer 202 and do the same admission work).

Each request comes from another address (``X-Forwarded-For`` through a trusted proxy) and another
``clientIdentifier``, so neither the geo verdict cache nor one rate-limit key flatters the figures. The
two are measured alternately, ``--rounds`` times each, and the medians compared. Target: on/off >= 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_admission import QUIET_DISPATCH_INTERVAL, Processes  # noqa: E402
from bench_geo import build_database  # noqa: E402
from loadgen import build_request, run_load  # noqa: E402
from redis_process import RedisProcess, free_port  # noqa: E402

HIGH = 1_000_000_000


def _config(path: Path, *, redis_url: str, protected: bool, database: Path) -> None:
    config: dict = {
        "RedisConnectionString": redis_url,
        "ForwardedHeaders": {"KnownProxies": ["127.0.0.1"]},
        "VoiceAiPlatform": {"ApiSecretToken": "t", "BaseUrl": "http://127.0.0.1:9/api/v1/",
                            "Campaigns": {"BenchCampaign": {"BusinessId": "1", "WebCampaignId": "w",
                                                            "AllowedRegionIds": ["local"]}}},
        "Security": {"WebhookApiToken": "w"},
        "Concurrency": {"MaxConcurrentSessions": 0},
        "Queue": {"MaxLength": 100_000_000},
    }
    if protected:
        config["Security"].update({
            "BlockVpn": True, "BlockProxy": True, "BlockDatacenter": True, "BlockTor": True,
            "RateLimitHourly": HIGH, "RateLimitDaily": HIGH, "RateLimitConcurrency": HIGH,
            "PerIpRateLimitHourly": HIGH, "PerIpRateLimitDaily": HIGH, "PerIpRateLimitConcurrency": HIGH,
        })
        config["GeoIp"] = {"AnonymousIpDatabase": str(database)}
    path.write_text(json.dumps(config))


def clean_addresses(database: Path, rng: random.Random, count: int) -> list[str]:
    """Random public IPv4 addresses that the database does not block, so every request is a 202."""
    from geo import AnonymizerChecker, BlockPolicy

    policy = BlockPolicy(block_vpn=True, block_proxy=True, block_datacenter=True, block_tor=True)
    checker = AnonymizerChecker(policy, anonymous_ip_database=str(database), cache_size=0)
    try:
        addresses: list[str] = []
        while len(addresses) < count:
            ip = f"{rng.randrange(11, 99)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            if checker.check(ip).allowed:
                addresses.append(ip)
        return addresses
    finally:
        checker.close()


def _request_factory(port: int, addresses: list[str]):  # type: ignore[no-untyped-def]
    counter = itertools.count()

    def make() -> bytes:
        n = next(counter)
        body = json.dumps({
            "campaignId": "BenchCampaign", "regionId": "local", "transportType": 0,
            "clientIdentifier": f"client-{n}", "dynamicVariables": {}, "metadata": {},
            "audioConfiguration": {"inputEncodingType": 1, "inputSampleRate": 16000, "inputBitsPerSample": 16,
                                   "outputEncodingType": 1, "outputSampleRate": 16000, "outputBitsPerSample": 16},
        }).encode()
        return build_request("POST", "127.0.0.1", port, "/api/session/request", body,
                             {"Content-Type": "application/json", "X-Forwarded-For": addresses[n % len(addresses)]})

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="iqra-bench-protection-"))
    database = tmp / "anonymous.mmdb"
    build_database(database, random.Random(7), 20_000)
    server = RedisProcess()
    server.start()
    procs = Processes(tmp)
    try:
        ports = {}
        for db, name in ((1, "off"), (2, "on")):
            _config(tmp / f"{name}.json", redis_url=f"redis://127.0.0.1:{server.port}/{db}",
                    protected=name == "on", database=database)
            ports[name] = free_port()
            # The admission bench's launcher: `serve`'s composition root with the dispatcher timer quiet.
            procs.spawn(f"gateway-{name}", [sys.executable, str(ROOT / "bench" / "bench_admission.py"),
                                            "--serve-gateway", str(tmp / f"{name}.json"), "--port", str(ports[name]),
                                            "--dispatch-interval", str(QUIET_DISPATCH_INTERVAL)], ports[name])
        addresses = clean_addresses(database, random.Random(11), 100_000)
        results: dict[str, list] = {"off": [], "on": []}
        print(f"POST /api/session/request (queued path), {args.connections} connections, "
              f"{args.duration:.0f} s x {args.rounds} rounds each, alternating")
        for round_no in range(args.rounds):
            for name in ("off", "on"):
                result = asyncio.run(run_load("127.0.0.1", ports[name], _request_factory(ports[name], addresses),
                                              connections=args.connections, duration=args.duration))
                results[name].append(result)
                print(result.summary(f"round {round_no + 1}, protection {name}"), flush=True)
        off = statistics.median(r.rps for r in results["off"])
        on = statistics.median(r.rps for r in results["on"])
        print()
        print(f"median throughput: off {off:.0f} req/s, on {on:.0f} req/s")
        print(f"protection on / off: {on / off:.2f}x  (target >= 0.90)")
        non_202 = {name: sum(v for r in rs for k, v in r.statuses.items() if k != 202) for name, rs in results.items()}
        print(f"answers other than 202: {non_202}  (must be 0: both paths did the same work)")
    finally:
        procs.stop_all()
        server.close()


if __name__ == "__main__":
    main()
