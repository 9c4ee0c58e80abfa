"""Benchmark: admission throughput with every client protection enabled versus disabled (issue 5).

Run: ``.venv/bin/python bench/bench_protection.py [--duration 5] [--rounds 3] [--connections 32]
[--requests-per-client 1]``

Two gateways (``iqra-gateway serve``) on one private ``redis-server`` (separate databases), both on the
queued path (cap 0) so that the platform is not part of the measurement:

* **off**: no anonymizer database, no rate limits;
* **on**: BlockVpn/Proxy/Datacenter/Tor against a synthetic 20,000-network Anonymous-IP database, plus
  hourly, daily and concurrency limits per client and per IP (set high enough never to refuse, so both
  gateways answer 202 and do the same admission work).

Each request comes from another address (``X-Forwarded-For`` through a trusted proxy) and another
``clientIdentifier`` (no round reuses another's), so neither the geo verdict cache nor one rate-limit key
flatters the figures: every request creates its client's and its address's rate-limit sets. With
``--requests-per-client K`` each client and address makes K requests (returning clients, whose sets
already hold hits). The two are measured alternately, ``--rounds`` times each, and the medians compared.
Target: on/off >= 0.9. The gateway's and Redis's CPU time per request (``/proc``) are printed too: they
move far less than requests/s when the machine is shared.
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
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the product packages and the tests harness (tests.harness)
sys.path.insert(0, str(ROOT / "bench"))

from bench_admission import QUIET_DISPATCH_INTERVAL, CpuMeter, Processes  # noqa: E402
from bench_geo import build_database  # noqa: E402
from loadgen import build_request, run_load  # noqa: E402
from tests.harness.redis_process import RedisProcess, free_port  # noqa: E402

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


def session_request(port: int, client: int, addresses: list[str]) -> bytes:
    """``POST /api/session/request`` from client number ``client`` (its ``clientIdentifier`` and address)."""
    body = json.dumps({
        "campaignId": "BenchCampaign", "regionId": "local", "transportType": 0,
        "clientIdentifier": f"client-{client}", "dynamicVariables": {}, "metadata": {},
        "audioConfiguration": {"inputEncodingType": 1, "inputSampleRate": 16000, "inputBitsPerSample": 16,
                               "outputEncodingType": 1, "outputSampleRate": 16000, "outputBitsPerSample": 16},
    }).encode()
    return build_request("POST", "127.0.0.1", port, "/api/session/request", body,
                         {"Content-Type": "application/json", "X-Forwarded-For": addresses[client % len(addresses)]})


def _request_factory(port: int, addresses: list[str], counter: Iterator[int] | None = None,
                     requests_per_client: int = 1):  # type: ignore[no-untyped-def]
    """Requests numbered by ``counter`` (pass one counter to every round, so that no round reuses another's
    clients); request n comes from client and address n // ``requests_per_client``."""
    counter = counter if counter is not None else itertools.count()

    def make() -> bytes:
        return session_request(port, next(counter) // requests_per_client, addresses)

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests-per-client", type=int, default=1,
                        help="requests each client (and address) makes; 1 = every request from a new one")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="iqra-bench-protection-"))
    database = tmp / "anonymous.mmdb"
    build_database(database, random.Random(7), 20_000)
    server = RedisProcess()
    server.start()
    procs = Processes(tmp)
    try:
        ports, pids = {}, {}
        for db, name in ((1, "off"), (2, "on")):
            _config(tmp / f"{name}.json", redis_url=f"redis://127.0.0.1:{server.port}/{db}",
                    protected=name == "on", database=database)
            ports[name] = free_port()
            # The admission bench's launcher: `serve`'s composition root with the dispatcher timer quiet.
            pids[name] = procs.spawn(f"gateway-{name}", [
                sys.executable, str(ROOT / "bench" / "bench_admission.py"), "--serve-gateway",
                str(tmp / f"{name}.json"), "--port", str(ports[name]),
                "--dispatch-interval", str(QUIET_DISPATCH_INTERVAL)], ports[name]).pid
        # Enough addresses that no request of a variant reuses one (at up to 6,000 requests/s, warm-up included).
        addresses = clean_addresses(database, random.Random(11),
                                    max(100_000, int(args.rounds * (args.duration + 1) * 6_000)))
        # One numbering per variant across its rounds: a later round never meets an earlier round's clients.
        counters = {"off": itertools.count(), "on": itertools.count()}
        results: dict[str, list] = {"off": [], "on": []}
        cpu: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        print(f"POST /api/session/request (queued path), {args.connections} connections, "
              f"{args.duration:.0f} s x {args.rounds} rounds each, alternating, "
              f"{args.requests_per_client} request(s) per client")
        for round_no in range(args.rounds):
            for name in ("off", "on"):
                requests = _request_factory(ports[name], addresses, counters[name], args.requests_per_client)
                # The two gateways share the Redis, but only one is loaded at a time.
                meter = CpuMeter(pids[name], server.pid)
                result = asyncio.run(run_load("127.0.0.1", ports[name], requests, connections=args.connections,
                                              duration=args.duration))
                cpu[name].append(meter.per_request_us(result.total_requests))
                results[name].append(result)
                print(f"{result.summary(f'round {round_no + 1}, protection {name}')}   CPU/request: gateway "
                      f"{cpu[name][-1][0]:.0f} us, Redis {cpu[name][-1][1]:.0f} us", flush=True)
        off = statistics.median(r.rps for r in results["off"])
        on = statistics.median(r.rps for r in results["on"])
        pairs = [b.rps / a.rps for a, b in zip(results["off"], results["on"], strict=True)]
        print()
        print(f"median throughput: off {off:.0f} req/s, on {on:.0f} req/s")
        print(f"protection on / off: {on / off:.2f}x  (target >= 0.90); per round "
              f"{', '.join(f'{ratio:.2f}' for ratio in pairs)}")
        for index, part in ((0, "gateway"), (1, "Redis")):
            off_us = statistics.median(c[index] for c in cpu["off"])
            on_us = statistics.median(c[index] for c in cpu["on"])
            print(f"{part} CPU per request: off {off_us:.0f} us, on {on_us:.0f} us (off / on {off_us / on_us:.2f})")
        non_202 = {name: sum(v for r in rs for k, v in r.statuses.items() if k != 202) for name, rs in results.items()}
        print(f"answers other than 202: {non_202}  (must be 0: both paths did the same work)")
    finally:
        procs.stop_all()
        server.close()


if __name__ == "__main__":
    main()
