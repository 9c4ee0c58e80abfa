"""Fast address parsing and network tables for the per-request path.

``ipaddress`` costs one to two microseconds per parse, more than the MaxMind lookup itself, so the hot
path turns an address string into its packed bytes with ``socket.inet_pton`` (strict on glibc: no octal,
no short forms, no blanks) and answers "which configured network holds it?" with one binary search over
non-overlapping byte ranges (big-endian bytes of equal length sort like the integers they encode).
``ipaddress`` is still used where speed does not matter: parsing configuration and building tables.
"""

from __future__ import annotations

import heapq
import ipaddress
import socket
from bisect import bisect_right
from collections.abc import Iterable
from itertools import pairwise
from typing import Generic, TypeAlias, TypeVar

__all__ = [
    "LOCAL_NETWORKS",
    "IPNetwork",
    "NetworkMap",
    "NetworkSet",
    "packed_address",
    "packed_to_text",
    "rate_limit_subject",
    "to_ipv4_network",
]

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
_MAPPED_NETWORK = ipaddress.IPv6Network("::ffff:0:0/96")


def packed_address(ip: str) -> bytes | None:
    """Parse a bare address without ``ipaddress``.

    Only the plain textual forms are accepted (no brackets, ports, zones or surrounding blanks); callers
    that may see those normalise first with :func:`geo.client_ip.normalize_ip`.

    :param ip: the address text.
    :returns: 4 bytes for IPv4 and IPv4-mapped IPv6, 16 bytes for other IPv6, ``None`` for anything else.
    """
    try:
        packed = _inet_pton(_AF_INET6 if ":" in ip else _AF_INET, ip)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    if len(packed) == 16 and packed[:12] == _MAPPED_PREFIX:
        return packed[12:]
    return packed


def packed_to_text(packed: bytes) -> str:
    """Return the canonical text of a packed address (RFC 5952 for IPv6)."""
    return _inet_ntop(_AF_INET if len(packed) == 4 else _AF_INET6, packed)


def rate_limit_subject(ip: str, ipv6_prefix_length: int) -> str:
    """The part of ``ip`` that per-IP limits count: IPv4 whole, IPv6 its network of the given prefix.

    One IPv6 customer is usually given a whole /64 (or more), so counting single IPv6 addresses would let a
    client rotate through billions of them; counting the /64 treats it as one household, as one IPv4
    address is. Unparseable text is returned as it is (the caller's own key then applies).

    :param ip: the client address, canonical text.
    :param ipv6_prefix_length: bits of an IPv6 address that identify one client (1 to 128).
    :returns: the IPv4 address, or the IPv6 network as ``"<address>/<prefix>"`` (the address alone for 128).
    """
    if ":" not in ip:
        return ip  # IPv4: the common case, and no parse needed
    packed = packed_address(ip)
    if packed is None:
        return ip
    if len(packed) == 4 or ipv6_prefix_length >= 128:
        return packed_to_text(packed)  # IPv4-mapped: the IPv4 address; or the whole IPv6 address
    bits = int.from_bytes(packed, "big") >> (128 - ipv6_prefix_length) << (128 - ipv6_prefix_length)
    return f"{packed_to_text(bits.to_bytes(16, 'big'))}/{ipv6_prefix_length}"


def to_ipv4_network(network: IPNetwork) -> IPNetwork:
    """Rewrite a network inside ``::ffff:0:0/96`` as the IPv4 network it maps.

    Packed addresses fold IPv4-mapped addresses into IPv4, so configured networks are folded the same way.
    """
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED_NETWORK):
        first = network.network_address.ipv4_mapped
        assert first is not None
        return ipaddress.IPv4Network((int(first), network.prefixlen - 96))
    return network


def _spans(network: IPNetwork) -> list[tuple[int, int, int]]:
    """``(byte length, first, last)`` ranges an (unfolded) network covers in packed-address space."""
    folded = to_ipv4_network(network)
    spans = [(folded.max_prefixlen // 8, int(folded.network_address), int(folded.broadcast_address))]
    if isinstance(folded, ipaddress.IPv6Network) and _MAPPED_NETWORK.subnet_of(folded):
        # e.g. ::/0 also covers every IPv4-mapped address, which we store as IPv4.
        spans.append((4, 0, 2**32 - 1))
    return spans


def _flatten(
    spans: list[tuple[int, int, int]], values: list[T], width: int
) -> tuple[list[bytes], list[bytes], list[T]]:
    """Turn ``(first, last, priority)`` spans into sorted disjoint ranges labelled by the best priority.

    A sweep over the span boundaries with a heap of the spans covering the current point: O(n log n), so
    even thousands of configured networks build instantly.
    """
    points = sorted({first for first, _, _ in spans} | {last + 1 for _, last, _ in spans})
    by_start = sorted(spans)
    active: list[tuple[int, int]] = []  # (priority, last)
    starts: list[int] = []
    ends: list[int] = []
    labels: list[T] = []
    index = 0
    for low, next_low in pairwise(points):
        while index < len(by_start) and by_start[index][0] <= low:
            heapq.heappush(active, (by_start[index][2], by_start[index][1]))
            index += 1
        while active and active[0][1] < low:
            heapq.heappop(active)
        if not active:
            continue
        label = values[active[0][0]]
        if labels and ends[-1] + 1 == low and labels[-1] == label:
            ends[-1] = next_low - 1
        else:
            starts.append(low)
            ends.append(next_low - 1)
            labels.append(label)
    return (
        [value.to_bytes(width, "big") for value in starts],
        [value.to_bytes(width, "big") for value in ends],
        labels,
    )


class NetworkMap(Generic[T]):
    """An immutable map from IPv4/IPv6 networks to values, looked up by packed address.

    :param entries: ``(network, value)`` pairs; where networks overlap, the earlier entry wins.
        IPv4-mapped IPv6 networks are folded into IPv4.
    """

    __slots__ = ("_size", "_tables")

    def __init__(self, entries: Iterable[tuple[IPNetwork, T]]) -> None:
        spans: dict[int, list[tuple[int, int, int]]] = {4: [], 16: []}
        values: list[T] = []
        for priority, (network, value) in enumerate(entries):
            values.append(value)
            for width, first, last in _spans(network):
                spans[width].append((first, last, priority))
        self._size = len(values)
        self._tables = {width: _flatten(family, values, width) for width, family in spans.items()}

    def __len__(self) -> int:
        """Number of entries given (before merging)."""
        return self._size

    def get(self, packed: bytes) -> T | None:
        """Return the value of the network holding ``packed`` (from :func:`packed_address`), or ``None``."""
        starts, ends, labels = self._tables[len(packed)]
        index = bisect_right(starts, packed) - 1
        if index >= 0 and packed <= ends[index]:
            return labels[index]
        return None


class NetworkSet:
    """An immutable set of networks answering membership for packed addresses.

    :param networks: the networks; IPv4-mapped IPv6 networks are folded into IPv4.
    """

    __slots__ = ("_map",)

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self._map: NetworkMap[bool] = NetworkMap((network, True) for network in networks)

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, packed: bytes) -> bool:
        return self._map.get(packed) is not None


#: Addresses that can never be a real anonymizer on the public internet: "this network", RFC 1918 and
#: unique local, loopback and link-local. Carrier-grade NAT (100.64.0.0/10) is deliberately absent: a
#: public service should not see it as a peer, and if it does, the database decides.
LOCAL_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(spec)
    for spec in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
