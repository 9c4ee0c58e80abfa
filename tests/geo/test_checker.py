"""AnonymizerChecker against real MaxMind databases (built with mmdb-writer, plus MaxMind's test files)."""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path

import pytest

from geo import AddressVerdict, AnonymizerChecker, BlockPolicy, GeoDatabaseError
from geo import checker as checker_module
from tests.harness.geo_mmdb import (
    ANONYMOUS_IP_TYPE,
    ANONYMOUS_RECORDS,
    ASN_RECORDS,
    ASN_TYPE,
    anonymous_record,
    write_database,
)
from tests.harness.maxmind_testdata import TestDataUnavailable, fetch_maxmind_test_databases

ALLOWED = AddressVerdict(allowed=True, reason=None)
VPN = AddressVerdict(allowed=False, reason="VPN detected.")
PROXY = AddressVerdict(allowed=False, reason="Proxy detected.")
DATACENTER = AddressVerdict(allowed=False, reason="Datacenter IP detected.")
TOR = AddressVerdict(allowed=False, reason="Tor exit node detected.")
NETWORK = AddressVerdict(allowed=False, reason="Access from this network is not allowed.")


def policy(
    *, vpn: bool = False, proxy: bool = False, datacenter: bool = False, tor: bool = False, **extra: object
) -> BlockPolicy:
    return BlockPolicy(block_vpn=vpn, block_proxy=proxy, block_datacenter=datacenter, block_tor=tor, **extra)  # type: ignore[arg-type]


ALL = {"vpn": True, "proxy": True, "datacenter": True, "tor": True}


@pytest.fixture
def anonymous_db(tmp_path: Path) -> str:
    return str(write_database(tmp_path / "anonymous.mmdb", ANONYMOUS_IP_TYPE, ANONYMOUS_RECORDS))


@pytest.fixture
def asn_db(tmp_path: Path) -> str:
    return str(write_database(tmp_path / "asn.mmdb", ASN_TYPE, ASN_RECORDS))


def make(block: BlockPolicy, anonymous: str | None, asn: str | None = None, **options: int) -> AnonymizerChecker:
    return AnonymizerChecker(block, anonymous_ip_database=anonymous, asn_database=asn, **options)


# -- every flag and message --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "ip", "verdict"),
    [
        ("vpn", "203.0.113.10", VPN),
        ("proxy", "203.0.113.20", PROXY),
        ("proxy", "203.0.113.21", PROXY),  # residential proxy
        ("datacenter", "203.0.113.30", DATACENTER),
        ("tor", "203.0.113.40", TOR),
        ("vpn", "2001:db8:1::5", VPN),
        ("tor", "2001:db8:2:ffff::1", TOR),
        ("proxy", "2001:db8:3::1", PROXY),
    ],
)
def test_each_flag_blocks_with_its_message(anonymous_db: str, flag: str, ip: str, verdict: AddressVerdict) -> None:
    with make(policy(**{flag: True}), anonymous_db) as checker:
        assert checker.check(ip) == verdict
    others = {name: name != flag for name in ALL}
    with make(policy(**others), anonymous_db) as checker:
        assert checker.check(ip) == ALLOWED


@pytest.mark.parametrize(
    ("flags", "ip", "verdict"),
    [
        # record with VPN, proxy, hosting and Tor: the original's order is VPN, proxy, datacenter, Tor
        (ALL, "203.0.113.50", VPN),
        ({**ALL, "vpn": False}, "203.0.113.50", PROXY),
        ({**ALL, "vpn": False, "proxy": False}, "203.0.113.50", DATACENTER),
        ({"tor": True}, "203.0.113.50", TOR),
        (ALL, "203.0.113.60", DATACENTER),  # hosting + Tor
        (ALL, "203.0.113.70", PROXY),  # proxy + Tor
    ],
)
def test_check_order(anonymous_db: str, flags: dict[str, bool], ip: str, verdict: AddressVerdict) -> None:
    with make(policy(**flags), anonymous_db) as checker:
        assert checker.check(ip) == verdict


@pytest.mark.parametrize("ip", ["8.8.8.8", "198.51.100.77", "2001:db8:9::1", "2606:4700::1111"])
def test_unknown_and_empty_records_are_clean(anonymous_db: str, ip: str) -> None:
    # 198.51.100.0/24 holds an empty record {}, the others are not in the database at all.
    with make(policy(**ALL), anonymous_db) as checker:
        assert checker.check(ip) == ALLOWED


@pytest.mark.parametrize(
    "ip", ["::ffff:203.0.113.10", "::FFFF:CB00:710A", "[::ffff:203.0.113.10]:443", " 203.0.113.10 "]
)
def test_ipv4_mapped_and_other_forms_find_the_ipv4_record(anonymous_db: str, ip: str) -> None:
    with make(policy(vpn=True), anonymous_db) as checker:
        assert checker.check(ip) == VPN


# -- ASN-based datacenter blocking -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "verdict"),
    [
        ("192.0.2.44", DATACENTER),  # ASN 64500, no anonymous-IP record
        ("2001:db8:4::9", DATACENTER),  # ASN 64501
        ("198.51.100.3", ALLOWED),  # ASN 64510 is not a hosting ASN
        ("8.8.4.4", ALLOWED),  # no ASN record
        ("203.0.113.40", DATACENTER),  # Tor exit inside a hosting ASN: datacenter is checked first
    ],
)
def test_hosting_asns(anonymous_db: str, asn_db: str, ip: str, verdict: AddressVerdict) -> None:
    block = policy(datacenter=True, tor=True, hosting_asns=frozenset({64500, 64501}))
    with make(block, anonymous_db, asn_db) as checker:
        assert checker.check(ip) == verdict


def test_hosting_asns_ignored_without_block_datacenter(anonymous_db: str, asn_db: str) -> None:
    block = policy(vpn=True, hosting_asns=frozenset({64500}))
    with make(block, anonymous_db, asn_db) as checker:
        assert checker.check("192.0.2.44") == ALLOWED


# -- networks and local addresses ---------------------------------------------------------------------


def test_allowed_networks_pass_before_everything(anonymous_db: str) -> None:
    block = policy(**ALL, allowed_networks=("203.0.113.48/29",), blocked_networks=("203.0.113.0/24",))
    with make(block, anonymous_db) as checker:
        assert checker.check("203.0.113.50") == ALLOWED
        assert checker.check("203.0.113.10") == NETWORK


def test_blocked_networks_work_without_any_database() -> None:
    block = policy(blocked_networks=("198.51.100.0/24", "2001:db8:bad::/48", "::ffff:192.0.2.0/120"))
    with make(block, None) as checker:
        assert checker.enabled
        assert checker.check("198.51.100.200") == NETWORK
        assert checker.check("2001:db8:bad::1") == NETWORK
        assert checker.check("192.0.2.9") == NETWORK
        assert checker.check("::ffff:198.51.100.1") == NETWORK
        assert checker.check("198.51.101.1") == ALLOWED


@pytest.mark.parametrize(
    "ip", ["127.0.0.1", "::1", "10.1.2.3", "172.16.5.4", "192.168.1.1", "169.254.0.9", "fe80::1", "fd12::1"]
)
def test_local_addresses_pass_even_if_the_database_lists_them(tmp_path: Path, ip: str) -> None:
    records = {
        "10.0.0.0/8": anonymous_record(vpn=True),
        "127.0.0.0/8": anonymous_record(vpn=True),
        "172.16.0.0/12": anonymous_record(vpn=True),
        "192.168.0.0/16": anonymous_record(vpn=True),
        "169.254.0.0/16": anonymous_record(vpn=True),
        "::1/128": anonymous_record(vpn=True),
        "fc00::/7": anonymous_record(vpn=True),
        "fe80::/10": anonymous_record(vpn=True),
    }
    database = write_database(tmp_path / "local.mmdb", ANONYMOUS_IP_TYPE, records)
    with make(policy(vpn=True), str(database)) as checker:
        assert checker.check(ip) == ALLOWED


def test_block_policy_parses_network_strings_and_names_bad_ones() -> None:
    block = policy(allowed_networks=("10.0.0.1/8",), blocked_networks=(ipaddress.ip_network("2001:db8::/32"),))
    assert block.allowed_networks == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ValueError, match="BlockedNetworks entry 'evil' is not a CIDR network"):
        policy(blocked_networks=("192.0.2.0/24", "evil"))


def test_disabled_checker_needs_no_database_and_allows_everything() -> None:
    with make(policy(), "/nonexistent/anonymous.mmdb", "/nonexistent/asn.mmdb") as checker:
        assert not checker.enabled
        assert checker.check("203.0.113.10") == ALLOWED
        assert checker.check("garbage") == ALLOWED


# -- lookup errors -----------------------------------------------------------------------------------


def test_non_ip_is_clean_and_logged_once(anonymous_db: str, caplog: pytest.LogCaptureFixture) -> None:
    with make(policy(**ALL), anonymous_db, cache_size=0) as checker, caplog.at_level(logging.WARNING, "geo"):
        assert checker.check("not-an-ip") == ALLOWED
        assert checker.check("also bad") == ALLOWED
        assert checker.check("") == ALLOWED
    warnings = [r for r in caplog.records if "not an IP address" in r.getMessage()]
    assert len(warnings) == 1
    assert "'not-an-ip'" in warnings[0].getMessage()


def test_ipv6_in_ipv4_only_database_is_clean_and_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = {"203.0.113.0/24": anonymous_record(vpn=True)}
    database = write_database(tmp_path / "v4.mmdb", ANONYMOUS_IP_TYPE, records, ip_version=4)
    with make(policy(vpn=True), str(database)) as checker, caplog.at_level(logging.WARNING, "geo"):
        assert checker.check("203.0.113.1") == VPN
        assert checker.check("2001:db8::1") == ALLOWED
        assert checker.check("2001:db8::2") == ALLOWED
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1


def test_check_after_close_does_not_raise(anonymous_db: str) -> None:
    checker = make(policy(vpn=True), anonymous_db, cache_size=0)
    assert checker.check("203.0.113.10") == VPN
    checker.close()
    checker.close()
    assert checker.check("203.0.113.10") == ALLOWED


# -- the verdict cache -------------------------------------------------------------------------------


@pytest.mark.parametrize("cache_size", [0, 1, 2, 65536])
def test_results_do_not_depend_on_the_cache(anonymous_db: str, cache_size: int) -> None:
    ips = ["203.0.113.10", "203.0.113.20", "8.8.8.8", "2001:db8:2::1", "203.0.113.10", "8.8.8.8"] * 3
    expected = [VPN, PROXY, ALLOWED, TOR, VPN, ALLOWED] * 3
    with make(policy(**ALL), anonymous_db, cache_size=cache_size) as checker:
        assert [checker.check(ip) for ip in ips] == expected


# -- start-up errors ---------------------------------------------------------------------------------


def test_missing_database_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "GeoIP2-Anonymous-IP.mmdb"
    with pytest.raises(GeoDatabaseError, match=re.escape("GeoIP2-Anonymous-IP.mmdb: database file not found")) as info:
        make(policy(vpn=True), str(missing))
    assert info.value.path == str(missing)


def test_unconfigured_database_warns_and_blocks_only_what_it_can(caplog: pytest.LogCaptureFixture) -> None:
    block = policy(tor=True, vpn=True, blocked_networks=("192.0.2.0/24",))
    with caplog.at_level(logging.WARNING, "geo"), make(block, None) as checker:
        assert checker.check("203.0.113.10") == ALLOWED
        assert checker.check("192.0.2.1") == NETWORK
    messages = [r.getMessage() for r in caplog.records]
    assert any("BlockVpn/BlockTor set but no anonymous-IP database is configured" in m for m in messages), messages


def test_unreadable_database_names_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "not-a-file.mmdb"
    directory.mkdir()
    with pytest.raises(GeoDatabaseError, match=re.escape("not-a-file.mmdb: cannot read database file")):
        make(policy(proxy=True), str(directory))


@pytest.mark.parametrize("content", [b"", b"this is not a MaxMind database" * 100])
def test_invalid_database_names_the_file(tmp_path: Path, content: bytes) -> None:
    bogus = tmp_path / "bogus.mmdb"
    bogus.write_bytes(content)
    with pytest.raises(GeoDatabaseError, match=re.escape("bogus.mmdb: not a valid MaxMind DB")):
        make(policy(datacenter=True), str(bogus))


def test_hosting_asns_without_an_asn_database(
    anonymous_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    block = policy(datacenter=True, hosting_asns=frozenset({64500}))
    with caplog.at_level(logging.WARNING, "geo"), make(block, anonymous_db, None) as checker:
        assert checker.check("192.0.2.44") == ALLOWED
        assert checker.check("203.0.113.30") == DATACENTER  # is_hosting_provider still works
    assert any("no ASN database" in r.getMessage() for r in caplog.records)
    with pytest.raises(GeoDatabaseError, match=re.escape("asn.mmdb: database file not found")):
        make(block, anonymous_db, str(tmp_path / "asn.mmdb"))


def test_datacenter_blocking_by_asn_alone(asn_db: str, caplog: pytest.LogCaptureFixture) -> None:
    block = policy(datacenter=True, hosting_asns=frozenset({64500}))
    with caplog.at_level(logging.WARNING, "geo"), make(block, None, asn_db) as checker:
        assert checker.check("192.0.2.44") == DATACENTER
        assert checker.check("203.0.113.30") == ALLOWED
    assert not caplog.records


def test_wrong_database_type_is_logged(asn_db: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "geo"), make(policy(vpn=True), asn_db) as checker:
        assert checker.check("203.0.113.10") == ALLOWED
    assert any("does not look like an anonymous database" in r.getMessage() for r in caplog.records)


def test_missing_c_extension_warns_loudly_and_still_works(
    anonymous_db: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(checker_module, "extension_available", lambda: False)
    with caplog.at_level(logging.WARNING, "geo"), make(policy(vpn=True), anonymous_db) as checker:
        assert checker.check("203.0.113.10") == VPN
        assert checker.check("2001:db8:1::1") == VPN
    assert any("C extension is NOT available" in r.getMessage() for r in caplog.records)


def test_c_extension_is_used_here(anonymous_db: str) -> None:
    # The speed target assumes MODE_MMAP_EXT; make sure the test environment really has it.
    assert checker_module.extension_available()


# -- MaxMind's published test databases ---------------------------------------------------------------


@pytest.fixture(scope="module")
def maxmind_files() -> tuple[str, str]:
    try:
        data = fetch_maxmind_test_databases()
    except TestDataUnavailable as exc:
        pytest.skip(f"MaxMind test databases unavailable: {exc}")
    return str(data.anonymous_ip), str(data.asn)


@pytest.mark.parametrize(
    ("flags", "ip", "verdict"),
    [
        (ALL, "1.2.0.1", VPN),
        (ALL, "6.1.0.3", PROXY),  # is_public_proxy
        (ALL, "6.1.0.4", PROXY),  # is_residential_proxy
        (ALL, "6.1.0.2", DATACENTER),  # is_hosting_provider
        (ALL, "65.0.0.1", TOR),
        (ALL, "1.124.213.1", VPN),  # VPN and Tor
        ({"tor": True}, "1.124.213.1", TOR),
        (ALL, "81.2.69.1", VPN),  # every flag
        ({"datacenter": True, "tor": True}, "81.2.69.1", DATACENTER),
        (ALL, "2001:480:3a::1", PROXY),
        (ALL, "::ffff:1.2.0.1", VPN),
        (ALL, "1.0.0.1", ALLOWED),  # empty record
        (ALL, "9.9.9.9", ALLOWED),
    ],
)
def test_maxmind_anonymous_ip_test_database(
    maxmind_files: tuple[str, str], flags: dict[str, bool], ip: str, verdict: AddressVerdict
) -> None:
    with make(policy(**flags), maxmind_files[0]) as checker:
        assert checker.check(ip) == verdict


def test_maxmind_asn_test_database(maxmind_files: tuple[str, str]) -> None:
    # 1.0.0.0/24 is AS15169 (Google Inc.), 2001:2000::/20 is AS1299 in GeoLite2-ASN-Test.
    block = policy(datacenter=True, hosting_asns=frozenset({15169, 1299}))
    with make(block, maxmind_files[0], maxmind_files[1]) as checker:
        assert checker.check("1.0.0.1") == DATACENTER
        assert checker.check("2001:2000::1") == DATACENTER
        assert checker.check("1.128.0.1") == ALLOWED  # AS1221
