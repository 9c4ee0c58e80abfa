"""Client address resolution behind trusted proxies (geo.client_ip): pure functions, no server needed."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geo.client_ip import ClientAddress, TrustedProxies, normalize_ip, resolve_client_address
from geo.networks import NetworkMap, NetworkSet, packed_address, rate_limit_subject, to_ipv4_network

PROXY = "10.0.0.2"
TRUSTED = TrustedProxies.parse([PROXY, "2001:db8::10"], ["172.16.0.0/12", "fd00:1::/64"])
NOBODY = TrustedProxies.parse([], [])


# -- normalize_ip ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("  203.0.113.7\t", "203.0.113.7"),
        ("203.0.113.7:8443", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::FFFF:CB00:7107", "203.0.113.7"),
        ("[::ffff:203.0.113.7]:80", "203.0.113.7"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25eth0]:80", "fe80::1"),
        ("::1", "::1"),
        ("0.0.0.0", "0.0.0.0"),
    ],
)
def test_normalize_ip_accepts_address_forms(raw: str, expected: str) -> None:
    assert normalize_ip(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "unknown",
        "_hidden",
        "example.com",
        "127.1",
        "010.0.0.1",
        "0x7f.0.0.1",
        "1.2.3.4.5",
        "256.1.1.1",
        "1.2.3.4:",
        "1.2.3.4:http",
        "1.2.3.4:65536",
        "1.2.3.4:²",
        "[1.2.3.4]",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "[2001:db8::1]:99999",
        "2001:db8::1::2",
        "1.2.3.4\x00",
        "%eth0",
        "1" * 200,
        '"1.2.3.4"',
    ],
)
def test_normalize_ip_rejects_garbage(raw: str) -> None:
    assert normalize_ip(raw) is None


@given(st.ip_addresses())
def test_normalize_ip_round_trips_every_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    expected = address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        expected = address.ipv4_mapped
    normalized = normalize_ip(str(address))
    assert normalized is not None
    assert ipaddress.ip_address(normalized) == expected


@given(st.text(max_size=60))
def test_normalize_ip_never_returns_a_non_address(text: str) -> None:
    normalized = normalize_ip(text)
    if normalized is not None:
        ipaddress.ip_address(normalized)  # raises if garbage got through


# -- TrustedProxies ----------------------------------------------------------------------------------


def test_parse_keeps_proxies_and_networks() -> None:
    trusted = TrustedProxies.parse([" 172.19.0.1 ", "::ffff:10.1.1.1"], ["10.0.0.0/8", "192.168.1.7/24"])
    assert trusted.proxies == frozenset({ipaddress.ip_address("172.19.0.1"), ipaddress.ip_address("10.1.1.1")})
    assert trusted.networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.168.1.0/24"))
    assert trusted.enabled


@pytest.mark.parametrize(
    ("proxies", "networks", "message"),
    [
        (["10.0.0.1", "proxy.local"], [], "KnownProxies entry 'proxy.local' is not an IP address"),
        (["10.0.0.0/8"], [], "KnownProxies entry '10.0.0.0/8' is not an IP address"),
        ([], ["10.0.0.0/33"], "KnownNetworks entry '10.0.0.0/33' is not a CIDR network"),
        ([], ["10.0.0.0/8", "nope"], "KnownNetworks entry 'nope' is not a CIDR network"),
    ],
)
def test_parse_names_the_bad_entry(proxies: list[str], networks: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrustedProxies.parse(proxies, networks)


def test_parse_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError, match="collections of strings"):
        TrustedProxies.parse("10.0.0.1", [])


@pytest.mark.parametrize(
    ("ip", "trusted"),
    [
        (PROXY, True),
        (f"{PROXY}:5555", True),
        (f"::ffff:{PROXY}", True),
        ("10.0.0.3", False),
        ("172.19.0.1", True),
        ("172.32.0.1", False),
        ("2001:db8::10", True),
        ("[2001:DB8::10]:443", True),
        ("2001:db8::11", False),
        ("fd00:1::abcd", True),
        ("fd00:2::1", False),
        ("garbage", False),
        ("", False),
    ],
)
def test_is_trusted(ip: str, trusted: bool) -> None:
    assert TRUSTED.is_trusted(ip) is trusted


def test_mapped_network_is_folded_into_ipv4() -> None:
    trusted = TrustedProxies.parse([], ["::ffff:10.9.0.0/112"])
    assert trusted.is_trusted("10.9.200.1")
    assert not trusted.is_trusted("10.8.0.1")


def test_empty_configuration_trusts_nobody() -> None:
    assert not NOBODY.enabled
    assert not NOBODY.is_trusted("127.0.0.1")


# -- resolve_client_address --------------------------------------------------------------------------


def test_forwarded_headers_are_ignored_when_no_proxy_is_configured() -> None:
    # The original (ASP.NET with both lists empty) would have believed this header.
    result = resolve_client_address("198.51.100.9", ["1.1.1.1"], ["https"], NOBODY)
    assert result == ClientAddress(ip="198.51.100.9", scheme=None)


@pytest.mark.parametrize(
    "forged",
    [["1.1.1.1"], [PROXY], ["1.1.1.1, 10.0.0.2"], ["garbage"], ["127.0.0.1", "::1"]],
)
def test_untrusted_peer_cannot_change_its_address(forged: list[str]) -> None:
    result = resolve_client_address("198.51.100.9", forged, ["https"], TRUSTED)
    assert result == ClientAddress(ip="198.51.100.9", scheme=None)


@given(
    peer=st.ip_addresses().filter(lambda a: not TRUSTED.is_trusted(str(a))),
    forwarded_for=st.lists(st.text(max_size=40), max_size=4),
    forwarded_proto=st.lists(st.text(max_size=10), max_size=3),
)
def test_untrusted_peer_spoofing_property(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, forwarded_for: list[str], forwarded_proto: list[str]
) -> None:
    result = resolve_client_address(str(peer), forwarded_for, forwarded_proto, TRUSTED)
    assert result == ClientAddress(ip=normalize_ip(str(peer)) or "", scheme=None)


@given(forwarded_for=st.lists(st.text(max_size=40), max_size=4))
def test_trusted_peer_result_is_always_an_address(forwarded_for: list[str]) -> None:
    result = resolve_client_address(PROXY, forwarded_for, [], TRUSTED)
    ipaddress.ip_address(result.ip)


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        # one proxy in front of us
        (PROXY, ["203.0.113.7"], "203.0.113.7"),
        # the client forged a header; our proxy appended the real address
        (PROXY, ["6.6.6.6, 203.0.113.7"], "203.0.113.7"),
        # a chain of trusted proxies is walked until the first untrusted hop
        (PROXY, ["6.6.6.6, 203.0.113.7, 172.20.0.5"], "203.0.113.7"),
        (PROXY, ["203.0.113.7", "172.20.0.5, 10.0.0.2"], "203.0.113.7"),
        # every hop trusted: the left-most one is the client
        (PROXY, ["172.20.0.9, 172.20.0.5"], "172.20.0.9"),
        # malformed entries stop the walk at the last good hop
        (PROXY, ["203.0.113.7, unknown, 172.20.0.5"], "172.20.0.5"),
        (PROXY, ["203.0.113.7, not an ip"], PROXY),
        (PROXY, ["203.0.113.7,"], PROXY),
        (PROXY, ["6.6.6.6, garbage, 203.0.113.7"], "203.0.113.7"),
        # forms are normalised
        (PROXY, ["::ffff:203.0.113.7"], "203.0.113.7"),
        (PROXY, ["203.0.113.7:51000"], "203.0.113.7"),
        (PROXY, ["[2001:DB8:AA::1]:51000"], "2001:db8:aa::1"),
        (f"::ffff:{PROXY}", ["2001:db8:aa::1"], "2001:db8:aa::1"),
        ("2001:db8::10", ["203.0.113.7"], "203.0.113.7"),
        ("fd00:1::5", ["2001:db8:aa::1, fd00:1::7"], "2001:db8:aa::1"),
        # no header from a trusted proxy: the proxy itself is the client
        (PROXY, [], PROXY),
        (PROXY, [""], PROXY),
    ],
)
def test_trusted_peer_walks_forwarded_for(peer: str, forwarded_for: list[str], expected: str) -> None:
    assert resolve_client_address(peer, forwarded_for, [], TRUSTED).ip == expected


@pytest.mark.parametrize(
    ("forwarded_for", "forwarded_proto", "scheme"),
    [
        (["203.0.113.7"], ["https"], "https"),
        (["203.0.113.7"], ["HTTPS "], "https"),
        (["203.0.113.7"], ["http"], "http"),
        (["203.0.113.7"], [], None),
        (["203.0.113.7"], ["gopher"], None),
        # entries line up from the right with the chosen hop
        (["203.0.113.7, 172.20.0.5"], ["https, http"], "https"),
        (["203.0.113.7", "172.20.0.5"], ["http", "https"], "http"),
        # fewer protos than hops (a proxy overwrote the header): the left-most is the best we have
        (["6.6.6.6, 203.0.113.7, 172.20.0.5"], ["https"], "https"),
        # no forwarded-for at all: the proxy's own proto still applies
        ([], ["https"], "https"),
    ],
)
def test_forwarded_proto_from_trusted_proxy(
    forwarded_for: list[str], forwarded_proto: list[str], scheme: str | None
) -> None:
    assert resolve_client_address(PROXY, forwarded_for, forwarded_proto, TRUSTED).scheme == scheme


def test_peer_that_is_not_an_ip_is_reported_as_is() -> None:
    result = resolve_client_address("unix-socket", ["203.0.113.7"], ["https"], TRUSTED)
    assert result == ClientAddress(ip="unix-socket", scheme=None)


def test_normalises_an_untrusted_mapped_peer() -> None:
    result = resolve_client_address("::ffff:198.51.100.9", [], [], TRUSTED)
    assert result == ClientAddress(ip="198.51.100.9", scheme=None)


# -- network tables (geo.networks), used by TrustedProxies and the checker --------------------------------


def _first_match(entries: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]], address: str) -> int | None:
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    for network, value in entries:
        folded = to_ipv4_network(network)
        if parsed in folded:
            return value
        if isinstance(parsed, ipaddress.IPv4Address) and ipaddress.IPv6Address(f"::ffff:{parsed}") in folded:
            return value
    return None


_small_v4_networks = st.builds(
    lambda base, prefix: ipaddress.IPv4Network((base << 24 | 0x00A8_0000, prefix), strict=False),
    st.integers(min_value=10, max_value=12),
    st.integers(min_value=8, max_value=32),
)
_small_v6_networks = st.builds(
    lambda low, prefix: ipaddress.IPv6Network(((0x2001_0DB8 << 96) | low, prefix), strict=False),
    st.integers(min_value=0, max_value=2**16),
    st.integers(min_value=100, max_value=128),
)


@given(
    networks=st.lists(st.one_of(_small_v4_networks, _small_v6_networks), max_size=8),
    probes=st.lists(
        st.one_of(
            st.integers(min_value=10 << 24, max_value=(13 << 24) - 1).map(lambda v: str(ipaddress.IPv4Address(v))),
            st.integers(min_value=0, max_value=2**17).map(
                lambda v: str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | v))
            ),
        ),
        max_size=20,
    ),
)
def test_network_map_matches_first_listed_network(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network], probes: list[str]
) -> None:
    entries = [(network, index) for index, network in enumerate(networks)]
    table = NetworkMap(entries)
    for probe in probes + [str(n.network_address) for n in networks] + [str(n.broadcast_address) for n in networks]:
        packed = packed_address(probe)
        assert packed is not None
        assert table.get(packed) == _first_match(entries, probe), probe


def test_network_map_folds_mapped_and_whole_ipv6_networks() -> None:
    table = NetworkMap(
        [(ipaddress.ip_network("::ffff:192.0.2.0/120"), "mapped"), (ipaddress.ip_network("::/0"), "all")]
    )
    assert table.get(socket.inet_aton("192.0.2.9")) == "mapped"
    assert table.get(socket.inet_aton("198.51.100.1")) == "all"  # ::/0 covers ::ffff:0:0/96 too
    assert table.get(socket.inet_pton(socket.AF_INET6, "2001:db8::1")) == "all"
    assert len(table) == 2
    assert socket.inet_aton("192.0.2.200") in NetworkSet([ipaddress.ip_network("192.0.2.128/25")])


@pytest.mark.parametrize(("ip", "prefix", "expected"), [
    ("198.51.100.7", 64, "198.51.100.7"),
    ("::ffff:198.51.100.7", 64, "198.51.100.7"),
    ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
    ("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"),
    ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6"),
    ("2001:db8:1:2:3:4:5:6", 1, "::/1"),
])
def test_rate_limit_subject_counts_an_ipv6_client_by_its_subnet(ip: str, prefix: int, expected: str) -> None:
    assert rate_limit_subject(ip, prefix) == expected
