"""Lookups per second: AnonymizerChecker.check vs the raw maxminddb reader, in the same run.

Usage::

    .venv/bin/python bench/bench_geo.py [--database GeoIP2-Anonymous-IP.mmdb] [--lookups 200000]

Without ``--database`` a synthetic GeoIP2-Anonymous-IP shaped database is built with mmdb-writer. Three
address mixes are timed: every address distinct (the verdict cache only costs), a hot set of 2,000 clients
(the cache pays off), and the distinct set with the cache disabled. Each figure is the best of several
rounds, since the machine is shared. The target is >= 500,000 lookups/s through the wrapper.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import maxminddb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geo import AnonymizerChecker, BlockPolicy
from geo.checker import DEFAULT_CACHE_SIZE

TARGET = 500_000
POLICY = BlockPolicy(block_vpn=True, block_proxy=True, block_datacenter=True, block_tor=True)


def build_database(path: Path, rng: random.Random, networks: int) -> None:
    from tests.harness.geo_mmdb import ANONYMOUS_IP_TYPE, anonymous_record, write_database

    flags = [
        anonymous_record(vpn=True),
        anonymous_record(public_proxy=True),
        anonymous_record(residential_proxy=True),
        anonymous_record(hosting=True),
        anonymous_record(tor=True),
        anonymous_record(vpn=True, hosting=True),
    ]
    records: dict[str, dict[str, bool]] = {}
    for _ in range(networks):
        network: ipaddress.IPv4Network | ipaddress.IPv6Network
        if rng.random() < 0.9:
            prefix = rng.choice((20, 24, 28, 32))
            network = ipaddress.IPv4Network((rng.getrandbits(32), prefix), strict=False)
        else:
            network = ipaddress.IPv6Network(((0x2001 << 112) | rng.getrandbits(112), 48), strict=False)
        records[str(network)] = rng.choice(flags)
    write_database(path, ANONYMOUS_IP_TYPE, records)


def random_addresses(rng: random.Random, count: int, listed: Sequence[str]) -> list[str]:
    """Mostly random public addresses, a quarter taken from listed networks so records are decoded."""
    addresses = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.25 and listed:
            network = ipaddress.ip_network(rng.choice(listed))
            addresses.append(str(network.network_address + rng.randrange(network.num_addresses)))
        elif roll < 0.9:
            addresses.append(str(ipaddress.IPv4Address(rng.randrange(1 << 24, 0xE0000000))))
        else:
            addresses.append(str(ipaddress.IPv6Address((0x2001 << 112) | rng.getrandbits(112))))
    return addresses


def rate(lookup: Callable[[str], object], addresses: Sequence[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for address in addresses:
            lookup(address)
        best = min(best, time.perf_counter() - started)
    return len(addresses) / best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", type=Path, help="an existing anonymous-IP .mmdb (default: synthetic)")
    parser.add_argument("--networks", type=int, default=20_000, help="networks in the synthetic database")
    parser.add_argument("--lookups", type=int, default=200_000, help="distinct addresses per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args(argv)
    rng = random.Random(options.seed)

    with tempfile.TemporaryDirectory() as scratch:
        database = options.database
        if database is None:
            database = Path(scratch) / "anonymous.mmdb"
            started = time.perf_counter()
            build_database(database, rng, options.networks)
            print(f"synthetic database: {options.networks} networks, built in {time.perf_counter() - started:.1f} s")
        raw = maxminddb.open_database(str(database), maxminddb.MODE_MMAP_EXT)
        listed = [str(network) for network, record in raw if record][:5000]
        distinct = random_addresses(rng, options.lookups, listed)
        hot_set = distinct[:2000]
        hot = [rng.choice(hot_set) for _ in range(options.lookups)]

        cached = AnonymizerChecker(POLICY, anonymous_ip_database=str(database))
        uncached = AnonymizerChecker(POLICY, anonymous_ip_database=str(database), cache_size=0)
        try:
            rounds = options.rounds
            rows = [
                ("distinct addresses", rate(raw.get, distinct, rounds), rate(cached.check, distinct, rounds)),
                ("hot set of 2,000", rate(raw.get, hot, rounds), rate(cached.check, hot, rounds)),
                ("distinct, cache off", rate(raw.get, distinct, rounds), rate(uncached.check, distinct, rounds)),
            ]
        finally:
            cached.close()
            uncached.close()
            raw.close()

    print(f"{options.lookups} lookups per round, best of {options.rounds}; verdict cache {DEFAULT_CACHE_SIZE} entries")
    print(f"{'mix':22s} {'raw reader/s':>14s} {'checker/s':>14s} {'ratio':>7s}")
    worst = min(wrapper for _, _, wrapper in rows)
    for name, raw_rate, wrapper_rate in rows:
        print(f"{name:22s} {raw_rate:14,.0f} {wrapper_rate:14,.0f} {wrapper_rate / raw_rate:7.2f}")
    verdict = "met" if worst >= TARGET else "NOT met"
    print(f"target {TARGET:,} lookups/s through the wrapper: {verdict} (slowest mix {worst:,.0f}/s)")
    return 0 if worst >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
