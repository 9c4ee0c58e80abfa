"""What the anonymizer checker blocks (:class:`BlockPolicy`) and the answers it gives (:class:`AddressVerdict`).

Pure values, no database and no I/O: :mod:`geo.checker` turns records into one of the verdicts below.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from geo.networks import IPNetwork

__all__ = [
    "ALLOWED",
    "BLOCKED_DATACENTER",
    "BLOCKED_NETWORK",
    "BLOCKED_PROXY",
    "BLOCKED_TOR",
    "BLOCKED_VPN",
    "BlockPolicy",
    "AddressVerdict",
]


def _as_network(entry: object, setting: str) -> IPNetwork:
    if isinstance(entry, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return entry
    try:
        return ipaddress.ip_network(str(entry).strip(), strict=False)
    except ValueError as exc:
        message = f"{setting} entry {entry!r} is not a CIDR network such as 203.0.113.0/24 ({exc})"
        raise ValueError(message) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockPolicy:
    """What to block (the ``Security`` settings).

    :param block_vpn: block ``is_anonymous_vpn``.
    :param block_proxy: block ``is_public_proxy`` and ``is_residential_proxy``.
    :param block_datacenter: block ``is_hosting_provider`` and addresses whose ASN is in ``hosting_asns``.
    :param block_tor: block ``is_tor_exit_node`` (documented by the original, never implemented there).
    :param hosting_asns: autonomous system numbers treated as datacenters; needs the ASN database.
    :param allowed_networks: networks that always pass (checked first); strings are parsed.
    :param blocked_networks: networks that are always refused; strings are parsed.
    :raises ValueError: naming a network entry that does not parse.
    """

    block_vpn: bool
    block_proxy: bool
    block_datacenter: bool
    block_tor: bool
    hosting_asns: frozenset[int] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    blocked_networks: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosting_asns", frozenset(int(asn) for asn in self.hosting_asns))
        for name, setting in (("allowed_networks", "AllowedNetworks"), ("blocked_networks", "BlockedNetworks")):
            entries: Iterable[object] = getattr(self, name)
            if isinstance(entries, str):
                entries = (entries,)
            object.__setattr__(self, name, tuple(_as_network(entry, setting) for entry in entries))

    @property
    def needs_anonymous_ip_database(self) -> bool:
        """True when any ``Block*`` flag is set."""
        return self.block_vpn or self.block_proxy or self.block_datacenter or self.block_tor

    @property
    def needs_asn_database(self) -> bool:
        """True when datacenters are blocked by ASN."""
        return self.block_datacenter and bool(self.hosting_asns)


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressVerdict:
    """The answer for one address.

    :param allowed: whether the request may proceed.
    :param reason: the exact message for the client when blocked, else ``None``.
    """

    allowed: bool
    reason: str | None


ALLOWED = AddressVerdict(allowed=True, reason=None)
BLOCKED_VPN = AddressVerdict(allowed=False, reason="VPN detected.")
BLOCKED_PROXY = AddressVerdict(allowed=False, reason="Proxy detected.")
BLOCKED_DATACENTER = AddressVerdict(allowed=False, reason="Datacenter IP detected.")
BLOCKED_TOR = AddressVerdict(allowed=False, reason="Tor exit node detected.")
BLOCKED_NETWORK = AddressVerdict(allowed=False, reason="Access from this network is not allowed.")
