"""The real client address behind trusted reverse proxies.

Pure functions over strings: the Tornado edge passes the socket peer address and the raw
``X-Forwarded-For`` / ``X-Forwarded-Proto`` header values, and gets back the address to rate-limit and
check. ``X-Forwarded-*`` are honoured only when the *immediate peer* is a configured proxy (unlike
Tornado's ``xheaders=True``, which trusts any peer).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from geo.networks import IPNetwork, NetworkSet, packed_address, packed_to_text, to_ipv4_network

__all__ = ["ClientAddress", "TrustedProxies", "normalize_ip", "resolve_client_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Longer than any address form we accept ("[" + 39-char IPv6 + "%" zone + "]:65535"); anything longer is
# rejected before parsing so a hostile header cannot make us do much work per entry.
_MAX_ADDRESS_TEXT = 100
_FORWARDED_SCHEMES = frozenset({"http", "https"})


def _is_port(text: str) -> bool:
    # isdigit() alone would accept non-ASCII digits such as "²".
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit() and int(text) <= 65535


def _parse_address(value: str) -> bytes | None:
    """Parse one address as found in a socket peer or a forwarded-header entry into packed form."""
    text = value.strip()
    if not text or len(text) > _MAX_ADDRESS_TEXT:
        return None
    if text[0] == "[":
        # "[v6]" or "[v6]:port"; brackets exist only to separate an IPv6 address from a port.
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if rest and not (rest[0] == ":" and _is_port(rest[1:])):
            return None
        text = text[1:end]
        if ":" not in text:
            return None
    elif text.count(":") == 1:
        # Exactly one colon is never IPv6, so it is "v4:port".
        text, _, port = text.partition(":")
        if not _is_port(port):
            return None
    if ":" in text:
        zone = text.find("%")
        if zone >= 0:
            # A zone index only says which local interface a link-local address came through.
            text = text[:zone]
    return packed_address(text)


def normalize_ip(value: str) -> str | None:
    """Reduce an address to its canonical text, or ``None`` if it is not an IP address.

    IPv4-mapped IPv6 (``::ffff:1.2.3.4``) becomes IPv4; brackets, a trailing port (``1.2.3.4:80``,
    ``[::1]:80``) and an IPv6 zone index (``fe80::1%eth0``) are removed; IPv6 is lower-cased and
    compressed. Obfuscated identifiers (``unknown``, ``_hidden``), hostnames and non-canonical IPv4
    (``127.1``, ``010.0.0.1``) are rejected.

    :param value: the address text.
    :returns: the canonical address, or ``None``.
    """
    if not isinstance(value, str):
        return None
    packed = _parse_address(value)
    return None if packed is None else packed_to_text(packed)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustedProxies:
    """The ``ForwardedHeaders:KnownProxies`` and ``KnownNetworks`` settings.

    :param proxies: single proxy addresses (IPv4-mapped ones are stored as IPv4).
    :param networks: proxy networks.
    """

    proxies: frozenset[IPAddress] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    _matcher: NetworkSet = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hosts = [ipaddress.ip_network(address) for address in self.proxies]
        object.__setattr__(self, "_matcher", NetworkSet([*hosts, *self.networks]))

    @classmethod
    def parse(cls, known_proxies: Iterable[str], known_networks: Iterable[str]) -> TrustedProxies:
        """Build from configuration strings.

        :param known_proxies: addresses such as ``"172.19.0.1"`` or ``"::1"``.
        :param known_networks: CIDR networks such as ``"10.0.0.0/8"``; host bits are allowed and ignored.
        :raises ValueError: naming the first entry that does not parse.
        :raises TypeError: if either argument is a single string rather than a collection of strings.
        """
        if isinstance(known_proxies, str) or isinstance(known_networks, str):
            raise TypeError("known_proxies and known_networks must be collections of strings, not a string")
        proxies: set[IPAddress] = set()
        for entry in known_proxies:
            try:
                address = ipaddress.ip_address(str(entry).strip())
            except ValueError as exc:
                message = f"KnownProxies entry {entry!r} is not an IP address ({exc})"
                raise ValueError(message) from None
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            proxies.add(address)
        networks: list[IPNetwork] = []
        for entry in known_networks:
            try:
                network = ipaddress.ip_network(str(entry).strip(), strict=False)
            except ValueError as exc:
                message = f"KnownNetworks entry {entry!r} is not a CIDR network such as 10.0.0.0/8 ({exc})"
                raise ValueError(message) from None
            networks.append(to_ipv4_network(network))
        return cls(proxies=frozenset(proxies), networks=tuple(networks))

    @property
    def enabled(self) -> bool:
        """False when both lists are empty, in which case forwarded headers are ignored."""
        return bool(self.proxies or self.networks)

    def is_trusted(self, ip: str) -> bool:
        """Tell whether ``ip`` (any form :func:`normalize_ip` accepts) is a configured proxy."""
        packed = _parse_address(ip) if isinstance(ip, str) else None
        return packed is not None and packed in self._matcher

    def _trusts(self, packed: bytes) -> bool:
        return packed in self._matcher


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAddress:
    """Where a request really came from.

    :param ip: the client address, normalised when it parsed (the raw peer string otherwise).
    :param scheme: ``"http"`` or ``"https"`` from ``X-Forwarded-Proto`` of a trusted proxy, else ``None``.
    """

    ip: str
    scheme: str | None


def _split_header(values: Sequence[str]) -> list[str]:
    # Repeated header lines are equivalent to one line joined with commas (RFC 9110 section 5.3).
    return [item for value in values for item in value.split(",")]


def _forwarded_scheme(protos: list[str], hops_used: int) -> str | None:
    """Pick the ``X-Forwarded-Proto`` entry that belongs to the chosen hop.

    Each proxy appends the scheme it was reached over, so entries line up with ``X-Forwarded-For`` from
    the right. A proxy that overwrites rather than appends (nginx's usual ``$scheme``) leaves fewer
    entries; then the left-most one is the closest we have to the client.
    """
    if not protos:
        return None
    position = max(hops_used, 1)
    entry = protos[-position] if position <= len(protos) else protos[0]
    scheme = entry.strip().lower()
    return scheme if scheme in _FORWARDED_SCHEMES else None


def resolve_client_address(
    peer_ip: str,
    forwarded_for: Sequence[str],
    forwarded_proto: Sequence[str],
    trusted: TrustedProxies,
) -> ClientAddress:
    """Find the client address the way ASP.NET's ForwardedHeaders middleware does, minus its quirks.

    The ``X-Forwarded-For`` entries are walked from the right while each hop is a trusted proxy; the first
    untrusted hop is the client, and if every hop is trusted the left-most one is. A malformed entry stops
    the walk and the last good hop is kept, so a garbage string never becomes the address.

    :param peer_ip: the address of the socket peer (Tornado's ``request.remote_ip``).
    :param forwarded_for: every ``X-Forwarded-For`` header value, in order.
    :param forwarded_proto: every ``X-Forwarded-Proto`` header value, in order.
    :param trusted: the configured proxies.
    :returns: the client address, with the forwarded scheme only when the peer is trusted.
    """
    peer = _parse_address(peer_ip) if isinstance(peer_ip, str) else None
    if peer is None:
        # Not an IP peer (Tornado reports "0.0.0.0" for a Unix socket, so this is only reached on odd
        # transports); there is no address to trust and nothing better to report.
        return ClientAddress(ip=str(peer_ip), scheme=None)
    # The original trusted every sender's X-Forwarded-For when KnownProxies and KnownNetworks were both
    # empty (ASP.NET only checks the peer when one of them is set). That lets any client pick its own
    # address and dodge rate limits and blocks, so with no proxies configured the headers are ignored.
    if not trusted.enabled or not trusted._trusts(peer):
        return ClientAddress(ip=packed_to_text(peer), scheme=None)
    client = peer
    hops_used = 0
    for hop in reversed(_split_header(forwarded_for)):
        address = _parse_address(hop)
        if address is None:
            break
        client = address
        hops_used += 1
        if not trusted._trusts(address):
            break
    return ClientAddress(ip=packed_to_text(client), scheme=_forwarded_scheme(_split_header(forwarded_proto), hops_used))
