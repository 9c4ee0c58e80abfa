"""Anonymizer blocking from MaxMind databases (replaces the original's ipapi.is HTTP call).

:class:`AnonymizerChecker` is a thin wrapper over ``maxminddb`` readers: it opens a GeoIP2-Anonymous-IP
shaped database (and optionally a GeoLite2-ASN shaped one) at start-up, answers :meth:`check` with a
:class:`Verdict` on every request, and picks up a database replaced on disk from :meth:`maybe_reload`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import maxminddb

from geo.client_ip import normalize_ip
from geo.errors import GeoDatabaseError
from geo.networks import LOCAL_NETWORKS, IPNetwork, NetworkMap, packed_address, packed_to_text

__all__ = [
    "ALLOWED",
    "BLOCKED_DATACENTER",
    "BLOCKED_NETWORK",
    "BLOCKED_PROXY",
    "BLOCKED_TOR",
    "BLOCKED_VPN",
    "AnonymizerChecker",
    "BlockPolicy",
    "Verdict",
    "extension_available",
]

log = logging.getLogger("geo")

#: Verdict-cache size: enough for every client of a busy node within a reload period, small enough
#: (~10 MB worst case) not to matter. Measured in bench/bench_geo.py.
DEFAULT_CACHE_SIZE = 65536


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
class Verdict:
    """The answer for one address.

    :param allowed: whether the request may proceed.
    :param reason: the exact message for the client when blocked, else ``None``.
    """

    allowed: bool
    reason: str | None


ALLOWED = Verdict(allowed=True, reason=None)
BLOCKED_VPN = Verdict(allowed=False, reason="VPN detected.")
BLOCKED_PROXY = Verdict(allowed=False, reason="Proxy detected.")
BLOCKED_DATACENTER = Verdict(allowed=False, reason="Datacenter IP detected.")
BLOCKED_TOR = Verdict(allowed=False, reason="Tor exit node detected.")
BLOCKED_NETWORK = Verdict(allowed=False, reason="Access from this network is not allowed.")


def extension_available() -> bool:
    """Tell whether maxminddb's C extension (needed for ``MODE_MMAP_EXT``) is importable."""
    try:
        import maxminddb.extension  # noqa: F401
    except ImportError:
        return False
    return True


# Substrings of metadata.database_type expected for each kind of database (GeoIP2-Anonymous-IP,
# GeoIP-Anonymous-Plus; GeoLite2-ASN, GeoIP2-ISP, which also carries autonomous_system_number).
_TYPE_MARKERS = {"anonymous": ("anonymous",), "asn": ("asn", "isp")}


def _signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    # A rename into place changes the inode; an in-place rewrite changes mtime or size.
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@dataclass(slots=True, kw_only=True)
class _Database:
    """One opened file and the stat signature it was opened with."""

    path: str
    reader: Any
    signature: tuple[int, int, int, int]


@dataclass(slots=True, kw_only=True)
class _State:
    """Everything a lookup reads, swapped as one reference on reload so a lookup sees old or new, never a mix.

    The verdict cache lives here, so a reload starts with an empty one.
    """

    anonymous_ip: _Database | None
    asn: _Database | None
    cache: dict[str, Verdict] = field(default_factory=dict)


class AnonymizerChecker:
    """Blocks VPNs, proxies, datacenters and Tor exits using MaxMind databases.

    :param policy: what to block.
    :param anonymous_ip_database: path of a GeoIP2-Anonymous-IP (or GeoIP-Anonymous-Plus) database.
    :param asn_database: path of a GeoLite2-ASN / GeoIP2-ISP database, used for ``hosting_asns``.
    :param cache_size: verdicts remembered per database generation; 0 disables the cache.
    :raises GeoDatabaseError: naming the file, if a database that a ``Block*`` flag needs is configured
        but missing, unreadable or not a MaxMind DB. A database that is not configured at all only logs a
        warning and leaves the flags that need it without effect.
    """

    def __init__(
        self,
        policy: BlockPolicy,
        *,
        anonymous_ip_database: str | None,
        asn_database: str | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._policy = policy
        self._cache_size = max(0, cache_size)
        # One table answers "allowed network? blocked network? local address?" in a single bisect; where
        # they overlap the earlier entry wins, which gives the documented order.
        self._overrides: NetworkMap[Verdict] = NetworkMap(
            [
                *((network, ALLOWED) for network in policy.allowed_networks),
                *((network, BLOCKED_NETWORK) for network in policy.blocked_networks),
                *((network, ALLOWED) for network in LOCAL_NETWORKS),
            ]
        )
        self._enabled = policy.needs_anonymous_ip_database or bool(policy.allowed_networks or policy.blocked_networks)
        self._block_vpn = policy.block_vpn
        self._block_proxy = policy.block_proxy
        self._block_datacenter = policy.block_datacenter
        self._block_tor = policy.block_tor
        self._hosting_asns = policy.hosting_asns
        self._logged: set[str] = set()
        # Readers replaced by a reload; closed on the next reload, long after any lookup that picked one
        # up before the swap has finished (a lookup is microseconds, the reload timer is seconds).
        self._retired: list[Any] = []
        self._closed = False
        if extension_available():
            self._mode = maxminddb.MODE_MMAP_EXT
        else:
            self._mode = maxminddb.MODE_MMAP
            log.warning(
                "maxminddb C extension is NOT available: anonymizer lookups use the pure-Python reader and "
                "are many times slower; reinstall maxminddb with its extension (libmaxminddb) for production"
            )
        # A configured file that cannot be opened stops start-up. An unconfigured one only disables the
        # flags that depend on it, with a warning: that is how the settings layer treats it too.
        anonymous = asn = None
        if policy.needs_asn_database:
            if asn_database:
                asn = self._open_required(asn_database, "asn")
            else:
                log.warning("hosting ASNs are configured but no ASN database is: ASN-based datacenter blocking is off")
        if policy.needs_anonymous_ip_database:
            if anonymous_ip_database:
                try:
                    anonymous = self._open_required(anonymous_ip_database, "anonymous")
                except GeoDatabaseError:
                    if asn is not None:
                        asn.reader.close()
                    raise
            else:
                inert = [
                    name
                    for name, on in (
                        ("BlockVpn", policy.block_vpn),
                        ("BlockProxy", policy.block_proxy),
                        ("BlockTor", policy.block_tor),
                    )
                    if on
                ]
                if policy.block_datacenter and asn is None:
                    inert.append("BlockDatacenter")
                if inert:
                    log.warning(
                        "%s set but no anonymous-IP database is configured: nothing is detected for them",
                        "/".join(inert),
                    )
        self._state = _State(anonymous_ip=anonymous, asn=asn)

    @property
    def enabled(self) -> bool:
        """False when no ``Block*`` flag is set and no networks are configured: every address passes."""
        return self._enabled

    @property
    def policy(self) -> BlockPolicy:
        """The policy this checker enforces."""
        return self._policy

    # -- opening -------------------------------------------------------------------------------------

    def _open(self, path: str, kind: str) -> _Database:
        """Open and sanity-check one database; raises ``OSError``, ``InvalidDatabaseError`` or ``ValueError``."""
        # Opening it ourselves first turns "unreadable" (permissions, a directory) into a clear OSError
        # instead of the extension's generic "is this a valid MaxMind DB file?".
        with open(path, "rb") as handle:
            signature = _signature(os.fstat(handle.fileno()))
        reader = maxminddb.open_database(path, self._mode)
        database_type = str(reader.metadata().database_type)
        if not any(marker in database_type.lower() for marker in _TYPE_MARKERS[kind]):
            # A wrong file (say GeoLite2-City) opens fine but silently blocks nothing; say so loudly.
            log.warning("%s has database_type %r, which does not look like an %s database", path, database_type, kind)
        return _Database(path=path, reader=reader, signature=signature)

    def _open_required(self, path: str, kind: str) -> _Database:
        try:
            return self._open(path, kind)
        except FileNotFoundError:
            raise GeoDatabaseError(path, "database file not found") from None
        except OSError as exc:
            raise GeoDatabaseError(path, f"cannot read database file ({exc.strerror or exc})") from None
        except (maxminddb.InvalidDatabaseError, ValueError) as exc:
            raise GeoDatabaseError(path, f"not a valid MaxMind DB ({exc})") from None

    # -- lookups -------------------------------------------------------------------------------------

    def check(self, ip: str) -> Verdict:
        """Decide whether ``ip`` may use the service. Never raises for bad input or a failing database.

        :param ip: the client address, normally already normalised by :func:`geo.client_ip.normalize_ip`.
        :returns: the verdict; ``reason`` is the client-facing message when blocked.
        """
        state = self._state
        cache = state.cache
        verdict = cache.get(ip)
        if verdict is not None:
            return verdict
        verdict = self._evaluate(state, ip)
        if self._cache_size:
            if len(cache) >= self._cache_size:
                # Dropping everything is cheaper than LRU bookkeeping on every hit, and a full cache
                # of distinct addresses means most lookups miss anyway.
                cache.clear()
            cache[ip] = verdict
        return verdict

    def _evaluate(self, state: _State, ip: str) -> Verdict:
        # The per-request path: kept flat, since every call and attribute lookup here is paid per request
        # (see bench/bench_geo.py).
        if not self._enabled:
            return ALLOWED
        packed = packed_address(ip) if isinstance(ip, str) else None
        if packed is None:
            text = normalize_ip(ip)
            if text is None:
                self._log_once("not-an-ip", "anonymizer check got %r, which is not an IP address; clean", ip)
                return ALLOWED
            ip = text
            packed = packed_address(text)
            assert packed is not None
        elif len(packed) == 4 and ":" in ip:
            # IPv4-mapped: MaxMind files alias ::ffff:0:0/96 to the IPv4 tree, generated ones may not.
            ip = packed_to_text(packed)
        override = self._overrides.get(packed)
        if override is not None:
            return override
        record = self._lookup(state.anonymous_ip, ip)
        if record is not None:
            get = record.get
            if self._block_vpn and get("is_anonymous_vpn") is True:
                return BLOCKED_VPN
            if self._block_proxy and (get("is_public_proxy") is True or get("is_residential_proxy") is True):
                return BLOCKED_PROXY
            if self._block_datacenter and get("is_hosting_provider") is True:
                return BLOCKED_DATACENTER
        if state.asn is not None:  # opened only when datacenters are blocked by ASN
            asn_record = self._lookup(state.asn, ip)
            if asn_record is not None and asn_record.get("autonomous_system_number") in self._hosting_asns:
                return BLOCKED_DATACENTER
        if record is not None and self._block_tor and record.get("is_tor_exit_node") is True:
            return BLOCKED_TOR
        return ALLOWED

    def _lookup(self, database: _Database | None, ip: str) -> dict[str, Any] | None:
        """Return the record for ``ip``, or ``None`` for unknown, empty or non-map records and for errors."""
        if database is None:
            return None
        try:
            record = database.reader.get(ip)
        except ValueError as exc:
            if database.reader.closed:
                # Only after close(): a reader retired by a reload stays open for a whole timer period.
                return None
            # An IPv6 address in an IPv4-only database.
            self._log_once(f"lookup:{database.path}", "lookup of %s in %s failed (%s); clean", ip, database.path, exc)
            return None
        except maxminddb.InvalidDatabaseError as exc:
            # Fail open: a corrupt data section must not lock every user out; the next good file fixes it.
            self._log_once(f"corrupt:{database.path}", "%s is corrupt (%s); addresses are clean", database.path, exc)
            return None
        return record if record and isinstance(record, dict) else None

    def _log_once(self, key: str, message: str, *args: object) -> None:
        # Repeated bad input must not flood the log; one line per kind is enough to notice it.
        if key in self._logged:
            log.debug(message, *args)
            return
        if len(self._logged) < 1000:
            self._logged.add(key)
        log.warning(message, *args)

    # -- reloading -----------------------------------------------------------------------------------

    def maybe_reload(self) -> bool:
        """Re-stat the database files and switch to any that were replaced.

        Meant for one caller (the gateway's timer, every few seconds); lookups on any thread may run
        meanwhile and see either the old or the new data, never an error. A file must be replaced by
        renaming a complete new file into place: the old one stays mapped until it is retired, whereas
        rewriting it in place would corrupt the mapping under running lookups. A replacement that is
        missing or fails to open is logged (once per file version) and the current data stays in use.

        :returns: True if a new database was swapped in.
        """
        if self._closed:
            return False
        for reader in self._retired:
            reader.close()
        self._retired.clear()
        state = self._state
        anonymous = self._reopened(state.anonymous_ip, "anonymous")
        asn = self._reopened(state.asn, "asn")
        if anonymous is state.anonymous_ip and asn is state.asn:
            return False
        self._state = _State(anonymous_ip=anonymous, asn=asn)
        for old, new in ((state.anonymous_ip, anonymous), (state.asn, asn)):
            if old is not None and old is not new:
                self._retired.append(old.reader)
                log.info("reloaded %s", old.path)
        return True

    def _reopened(self, database: _Database | None, kind: str) -> _Database | None:
        if database is None:
            return None
        stat_key = f"stat:{database.path}"
        try:
            signature = _signature(os.stat(database.path))
        except OSError as exc:
            self._log_once(stat_key, "cannot stat %s (%s); keeping the loaded database", database.path, exc)
            return database
        self._logged.discard(stat_key)  # warn again if it disappears again later
        if signature == database.signature:
            return database
        try:
            replacement = self._open(database.path, kind)
        except (OSError, maxminddb.InvalidDatabaseError, ValueError) as exc:
            self._log_once(
                f"reload:{database.path}:{signature}",
                "replacement %s cannot be opened (%s); keeping the loaded database",
                database.path,
                exc,
            )
            return database
        # If the file was replaced again between _open's stat and its open, the recorded signature is the
        # older one and the next call simply reopens: one extra reload, never a wrong one.
        return replacement

    def close(self) -> None:
        """Close every reader. Later checks still answer (from the cache or as clean), never raise."""
        if self._closed:
            return
        self._closed = True
        state = self._state
        self._state = _State(anonymous_ip=None, asn=None)
        for reader in self._retired:
            reader.close()
        self._retired.clear()
        for database in (state.anonymous_ip, state.asn):
            if database is not None:
                database.reader.close()

    def __enter__(self) -> AnonymizerChecker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
