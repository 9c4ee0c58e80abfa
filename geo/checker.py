"""Anonymizer blocking from MaxMind databases (replaces the original's ipapi.is HTTP call).

:class:`AnonymizerChecker` is a thin wrapper over ``maxminddb`` readers: it opens a GeoIP2-Anonymous-IP
shaped database (and optionally a GeoLite2-ASN shaped one) at start-up, answers :meth:`check` with a
:class:`AddressVerdict` on every request, and picks up a database replaced on disk from :meth:`maybe_reload`.

The policy and verdict values live in :mod:`geo.policy`, the per-file handle in :mod:`geo.database`; this
module composes them with the verdict cache and owns the per-request path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import maxminddb

from geo.client_ip import normalize_ip
from geo.database import Database, extension_available, open_required
from geo.errors import GeoDatabaseError
from geo.networks import LOCAL_NETWORKS, NetworkMap, packed_address, packed_to_text
from geo.policy import (
    ALLOWED,
    BLOCKED_DATACENTER,
    BLOCKED_NETWORK,
    BLOCKED_PROXY,
    BLOCKED_TOR,
    BLOCKED_VPN,
    BlockPolicy,
    AddressVerdict,
)
from geo.warn_once import WarnOnce

__all__ = ["DEFAULT_CACHE_SIZE", "AnonymizerChecker", "extension_available"]

log = logging.getLogger("geo")

#: Verdict-cache size: enough for every client of a busy node within a reload period, small enough
#: (~10 MB worst case) not to matter. Measured in bench/bench_geo.py.
DEFAULT_CACHE_SIZE = 65536


@dataclass(slots=True, kw_only=True)
class _State:
    """Everything a lookup reads, swapped as one reference on reload so a lookup sees old or new, never a mix.

    The verdict cache lives here, so a reload starts with an empty one.
    """

    anonymous_ip: Database | None
    asn: Database | None
    cache: dict[str, AddressVerdict] = field(default_factory=dict)


def _reader_mode() -> int:
    # extension_available is looked up in this module's namespace so that a test can stand in for a
    # machine without the extension.
    if extension_available():
        return maxminddb.MODE_MMAP_EXT
    log.warning(
        "maxminddb C extension is NOT available: anonymizer lookups use the pure-Python reader and "
        "are many times slower; reinstall maxminddb with its extension (libmaxminddb) for production"
    )
    return maxminddb.MODE_MMAP


def _warn_inert_flags(policy: BlockPolicy, *, asn_open: bool) -> None:
    """Block flags set without the database that detects them do nothing: say so once at start-up."""
    inert = [name for name, on in (("BlockVpn", policy.block_vpn), ("BlockProxy", policy.block_proxy),
                                   ("BlockTor", policy.block_tor)) if on]
    if policy.block_datacenter and not asn_open:
        inert.append("BlockDatacenter")
    if inert:
        log.warning("%s set but no anonymous-IP database is configured: nothing is detected for them",
                    "/".join(inert))


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
        self._overrides: NetworkMap[AddressVerdict] = NetworkMap(
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
        self._warnings = WarnOnce(log)
        # Readers replaced by a reload; closed on the next reload, long after any lookup that picked one
        # up before the swap has finished (a lookup is microseconds, the reload timer is seconds).
        self._retired: list[Any] = []
        self._closed = False
        self._state = self._open_databases(policy, anonymous_ip_database, asn_database, _reader_mode())

    def _open_databases(self, policy: BlockPolicy, anonymous_ip_database: str | None, asn_database: str | None,
                        mode: int) -> _State:
        """Open the databases the policy needs. A configured file that cannot be opened stops start-up.
        An unconfigured one only disables the flags that depend on it, with a warning: that is how the
        settings layer treats it too."""
        anonymous = asn = None
        if policy.needs_asn_database:
            if asn_database:
                asn = open_required(asn_database, "asn", mode, self._warnings)
            else:
                log.warning("hosting ASNs are configured but no ASN database is: ASN-based datacenter blocking is off")
        if policy.needs_anonymous_ip_database:
            if anonymous_ip_database:
                try:
                    anonymous = open_required(anonymous_ip_database, "anonymous", mode, self._warnings)
                except GeoDatabaseError:
                    if asn is not None:
                        asn.reader.close()
                    raise
            else:
                _warn_inert_flags(policy, asn_open=asn is not None)
        return _State(anonymous_ip=anonymous, asn=asn)

    @property
    def enabled(self) -> bool:
        """False when no ``Block*`` flag is set and no networks are configured: every address passes."""
        return self._enabled

    @property
    def policy(self) -> BlockPolicy:
        """The policy this checker enforces."""
        return self._policy

    # -- lookups -------------------------------------------------------------------------------------

    def check(self, ip: str) -> AddressVerdict:
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

    def _evaluate(self, state: _State, ip: str) -> AddressVerdict:
        # The per-request path: kept flat, since every call and attribute lookup here is paid per request
        # (see bench/bench_geo.py).
        if not self._enabled:
            return ALLOWED
        packed = packed_address(ip) if isinstance(ip, str) else None
        if packed is None:
            text = normalize_ip(ip)
            if text is None:
                self._warnings.warning("not-an-ip", "anonymizer check got %r, which is not an IP address; clean", ip)
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
        anonymous = state.anonymous_ip
        record = anonymous.lookup(ip) if anonymous is not None else None
        if record is not None:
            get = record.get
            if self._block_vpn and get("is_anonymous_vpn") is True:
                return BLOCKED_VPN
            if self._block_proxy and (get("is_public_proxy") is True or get("is_residential_proxy") is True):
                return BLOCKED_PROXY
            if self._block_datacenter and get("is_hosting_provider") is True:
                return BLOCKED_DATACENTER
        asn = state.asn
        if asn is not None:  # opened only when datacenters are blocked by ASN
            asn_record = asn.lookup(ip)
            if asn_record is not None and asn_record.get("autonomous_system_number") in self._hosting_asns:
                return BLOCKED_DATACENTER
        if record is not None and self._block_tor and record.get("is_tor_exit_node") is True:
            return BLOCKED_TOR
        return ALLOWED

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
        anonymous = state.anonymous_ip.reopened() if state.anonymous_ip is not None else None
        asn = state.asn.reopened() if state.asn is not None else None
        if anonymous is state.anonymous_ip and asn is state.asn:
            return False
        self._state = _State(anonymous_ip=anonymous, asn=asn)
        for old, new in ((state.anonymous_ip, anonymous), (state.asn, asn)):
            if old is not None and old is not new:
                self._retired.append(old.reader)
                log.info("reloaded %s", old.path)
        return True

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
