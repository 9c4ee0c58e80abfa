"""AnonymizerChecker.maybe_reload: a database renamed into place is picked up without a failed lookup."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

import pytest

from geo import AddressVerdict, AnonymizerChecker, BlockPolicy
from tests.harness.geo_mmdb import (
    ANONYMOUS_IP_TYPE,
    ASN_TYPE,
    anonymous_record,
    asn_record,
    replace_database,
    write_database,
)

ALLOWED = AddressVerdict(allowed=True, reason=None)
VPN = AddressVerdict(allowed=False, reason="VPN detected.")
TOR = AddressVerdict(allowed=False, reason="Tor exit node detected.")
DATACENTER = AddressVerdict(allowed=False, reason="Datacenter IP detected.")

POLICY = BlockPolicy(block_vpn=True, block_proxy=True, block_datacenter=False, block_tor=True)

# Two generations of the same database that disagree about every probe address.
GENERATION_A = {
    "203.0.113.10/32": anonymous_record(vpn=True),
    "2001:db8:1::/48": anonymous_record(vpn=True),
}
GENERATION_B = {
    "203.0.113.11/32": anonymous_record(tor=True),
    "2001:db8:2::/48": anonymous_record(tor=True),
}
PROBES = ("203.0.113.10", "203.0.113.11", "2001:db8:1::1", "2001:db8:2::1")
EXPECTED = {
    "A": (VPN, ALLOWED, VPN, ALLOWED),
    "B": (ALLOWED, TOR, ALLOWED, TOR),
}
RECORDS = {"A": GENERATION_A, "B": GENERATION_B}


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return write_database(tmp_path / "GeoIP2-Anonymous-IP.mmdb", ANONYMOUS_IP_TYPE, GENERATION_A)


def verdicts(checker: AnonymizerChecker) -> tuple[AddressVerdict, ...]:
    return tuple(checker.check(ip) for ip in PROBES)


def test_unchanged_file_is_not_reloaded(database: Path) -> None:
    with AnonymizerChecker(POLICY, anonymous_ip_database=str(database)) as checker:
        assert checker.maybe_reload() is False
        assert checker.maybe_reload() is False
        assert verdicts(checker) == EXPECTED["A"]


def test_replaced_file_is_served_after_reload_and_not_before(database: Path) -> None:
    with AnonymizerChecker(POLICY, anonymous_ip_database=str(database)) as checker:
        assert verdicts(checker) == EXPECTED["A"]  # also fills the verdict cache
        replace_database(database, ANONYMOUS_IP_TYPE, GENERATION_B)
        # The old file is still mapped after the rename, so lookups keep working until the swap.
        assert verdicts(checker) == EXPECTED["A"]
        assert checker.maybe_reload() is True
        assert verdicts(checker) == EXPECTED["B"]  # the cache did not survive the swap
        assert checker.maybe_reload() is False


@pytest.mark.parametrize("cache_size", [0, 1024], ids=["uncached", "cached"])
def test_swap_under_a_steady_stream_of_lookups(database: Path, cache_size: int) -> None:
    """A lookup thread runs flat out while the main thread replaces the file and reloads, many times.

    The main thread publishes the generation number only after ``maybe_reload`` returned, so a lookup that
    read generation ``g`` must see generation ``g`` or, if the next swap is already under way, ``g + 1``;
    anything else (an exception, stale data, a mix) is a failure.
    """
    sequence = ["A"] + ["B", "A"] * 10
    published = [0]
    seen = [threading.Event() for _ in sequence]
    stop = threading.Event()
    failures: list[str] = []
    lookups = [0]

    def lookup_loop() -> None:
        try:
            while not stop.is_set():
                generation = published[0]
                for index, ip in enumerate(PROBES):
                    verdict = checker.check(ip)
                    lookups[0] += 1
                    acceptable = {EXPECTED[sequence[generation]][index]}
                    if generation + 1 < len(sequence):
                        acceptable.add(EXPECTED[sequence[generation + 1]][index])
                    if verdict not in acceptable:
                        failures.append(f"generation {generation}: {ip} -> {verdict}")
                if verdicts(checker) == EXPECTED[sequence[generation]] and published[0] == generation:
                    seen[generation].set()
        except Exception as exc:  # recorded, never lost in the thread
            failures.append(f"{type(exc).__name__}: {exc}")
            for event in seen:
                event.set()

    # Switch threads as often as possible so lookups interleave with every step of the swap.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    with AnonymizerChecker(POLICY, anonymous_ip_database=str(database), cache_size=cache_size) as checker:
        worker = threading.Thread(target=lookup_loop, name="geo-lookups")
        worker.start()
        try:
            assert seen[0].wait(10), "lookup thread never saw the first generation"
            for generation in range(1, len(sequence)):
                replace_database(database, ANONYMOUS_IP_TYPE, RECORDS[sequence[generation]])
                assert checker.maybe_reload() is True
                published[0] = generation
                assert seen[generation].wait(10), f"generation {generation} was never observed"
                assert not failures, failures[:5]
        finally:
            stop.set()
            worker.join(10)
            sys.setswitchinterval(switch_interval)
    assert not worker.is_alive()
    assert failures == []
    assert lookups[0] > 10 * len(PROBES)


def test_missing_replacement_keeps_serving_and_logs_once(database: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        AnonymizerChecker(POLICY, anonymous_ip_database=str(database)) as checker,
        caplog.at_level(logging.WARNING, "geo"),
    ):
        os.unlink(database)
        assert checker.maybe_reload() is False
        assert checker.maybe_reload() is False
        assert verdicts(checker) == EXPECTED["A"]
        assert len([r for r in caplog.records if "cannot stat" in r.getMessage()]) == 1
        write_database(database, ANONYMOUS_IP_TYPE, GENERATION_B)
        assert checker.maybe_reload() is True
        assert verdicts(checker) == EXPECTED["B"]


def test_broken_replacement_keeps_serving_until_a_good_one_arrives(
    database: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        AnonymizerChecker(POLICY, anonymous_ip_database=str(database)) as checker,
        caplog.at_level(logging.WARNING, "geo"),
    ):
        broken = database.with_suffix(".partial")
        broken.write_bytes(b"\x00" * 4096)
        os.replace(broken, database)
        for _ in range(3):
            assert checker.maybe_reload() is False
            assert verdicts(checker) == EXPECTED["A"]
        assert len([r for r in caplog.records if "cannot be opened" in r.getMessage()]) == 1
        replace_database(database, ANONYMOUS_IP_TYPE, GENERATION_B)
        assert checker.maybe_reload() is True
        assert verdicts(checker) == EXPECTED["B"]


def test_asn_database_is_reloaded_too(tmp_path: Path) -> None:
    anonymous = write_database(tmp_path / "anonymous.mmdb", ANONYMOUS_IP_TYPE, {})
    asn = write_database(tmp_path / "asn.mmdb", ASN_TYPE, {"192.0.2.0/24": asn_record(64500)})
    block = BlockPolicy(
        block_vpn=False, block_proxy=False, block_datacenter=True, block_tor=False, hosting_asns=frozenset({64500})
    )
    with AnonymizerChecker(block, anonymous_ip_database=str(anonymous), asn_database=str(asn)) as checker:
        assert checker.check("192.0.2.1") == DATACENTER
        replace_database(asn, ASN_TYPE, {"192.0.2.0/24": asn_record(64510)})
        assert checker.maybe_reload() is True
        assert checker.check("192.0.2.1") == ALLOWED


def test_retired_reader_is_closed_on_the_next_reload(database: Path) -> None:
    with AnonymizerChecker(POLICY, anonymous_ip_database=str(database)) as checker:
        first = checker._state.anonymous_ip.reader  # type: ignore[union-attr]
        replace_database(database, ANONYMOUS_IP_TYPE, GENERATION_B)
        assert checker.maybe_reload() is True
        # Kept open for one timer period: a lookup that fetched it just before the swap may still use it.
        assert not first.closed
        assert checker.maybe_reload() is False
        assert first.closed


def test_reload_after_close_is_a_no_op(database: Path) -> None:
    checker = AnonymizerChecker(POLICY, anonymous_ip_database=str(database))
    checker.close()
    replace_database(database, ANONYMOUS_IP_TYPE, GENERATION_B)
    assert checker.maybe_reload() is False


def test_file_that_disappears_twice_is_reported_twice(database: Path, caplog: pytest.LogCaptureFixture) -> None:
    with (
        AnonymizerChecker(POLICY, anonymous_ip_database=str(database)) as checker,
        caplog.at_level(logging.WARNING, "geo"),
    ):
        for records in (GENERATION_B, GENERATION_A):
            os.unlink(database)
            assert checker.maybe_reload() is False
            assert checker.maybe_reload() is False
            write_database(database, ANONYMOUS_IP_TYPE, records)
            assert checker.maybe_reload() is True
        assert verdicts(checker) == EXPECTED["A"]
    assert len([r for r in caplog.records if "cannot stat" in r.getMessage()]) == 2
