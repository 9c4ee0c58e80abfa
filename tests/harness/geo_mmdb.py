"""Build small MaxMind databases for the geo tests with ``mmdb-writer``.

Records follow the published shapes: GeoIP2-Anonymous-IP records carry only the flags that are true
(plus ``is_anonymous`` when any is), GeoLite2-ASN records carry ``autonomous_system_number`` (uint32)
and ``autonomous_system_organization``. Databases are IPv6 with the IPv4 tree at ``::/96``, like
MaxMind's own files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

ANONYMOUS_IP_TYPE = "GeoIP2-Anonymous-IP"
ASN_TYPE = "GeoLite2-ASN"


def anonymous_record(
    *,
    vpn: bool = False,
    public_proxy: bool = False,
    residential_proxy: bool = False,
    hosting: bool = False,
    tor: bool = False,
) -> dict[str, bool]:
    """Return a GeoIP2-Anonymous-IP record with the given flags (an empty dict when none is set)."""
    flags = {
        "is_anonymous_vpn": vpn,
        "is_public_proxy": public_proxy,
        "is_residential_proxy": residential_proxy,
        "is_hosting_provider": hosting,
        "is_tor_exit_node": tor,
    }
    record = {name: True for name, value in flags.items() if value}
    if record:
        record["is_anonymous"] = True
    return record


def asn_record(number: int, organization: str | None = None) -> dict[str, Any]:
    """Return a GeoLite2-ASN record."""
    record: dict[str, Any] = {"autonomous_system_number": number}
    if organization is not None:
        record["autonomous_system_organization"] = organization
    return record


def write_database(
    path: Path | str, database_type: str, records: Mapping[str, Mapping[str, Any]], *, ip_version: int = 6
) -> Path:
    """Write ``records`` (CIDR -> record) to ``path`` directly (not atomically).

    :param ip_version: 6 (default, IPv4 stored at ``::/96``) or 4 for an IPv4-only database.
    """
    writer = MMDBWriter(
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=["en"],
        description=f"geo test {database_type}",
        # MaxMind stores the ASN as uint32; "auto" would pick the smallest type that fits.
        int_type="u32",
    )
    for network, record in records.items():
        writer.insert_network(IPSet([network]), dict(record))
    writer.to_db_file(os.fspath(path))
    return Path(path)


def replace_database(path: Path | str, database_type: str, records: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write a new database next to ``path`` and rename it into place, as a database updater does."""
    target = Path(path)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write_database(temporary, database_type, records)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


#: A small anonymous-IP data set covering every flag, IPv4 and IPv6, and an empty record.
ANONYMOUS_RECORDS: dict[str, dict[str, bool]] = {
    "203.0.113.10/32": anonymous_record(vpn=True),
    "203.0.113.20/32": anonymous_record(public_proxy=True),
    "203.0.113.21/32": anonymous_record(residential_proxy=True),
    "203.0.113.30/32": anonymous_record(hosting=True),
    "203.0.113.40/32": anonymous_record(tor=True),
    "203.0.113.50/32": anonymous_record(vpn=True, public_proxy=True, hosting=True, tor=True),
    "203.0.113.60/32": anonymous_record(hosting=True, tor=True),
    "203.0.113.70/32": anonymous_record(public_proxy=True, tor=True),
    "198.51.100.0/24": {},
    "2001:db8:1::/48": anonymous_record(vpn=True),
    "2001:db8:2::/48": anonymous_record(tor=True),
    "2001:db8:3::/48": anonymous_record(residential_proxy=True),
}

#: ASNs for the ASN database; 64500 and 64501 play the hosting ASNs in the tests.
ASN_RECORDS: dict[str, dict[str, Any]] = {
    "192.0.2.0/24": asn_record(64500, "Example Hosting"),
    "198.51.100.0/24": asn_record(64510, "Example Broadband"),
    "203.0.113.40/32": asn_record(64500, "Example Hosting"),
    "2001:db8:4::/48": asn_record(64501),
}
