"""Anonymizer and abuse protection: the ``Security`` section and the ``GeoIp`` databases its block flags need."""

from __future__ import annotations

import os

from gateway.config.binder import Binder
from gateway.config.problems import Section, failed
from gateway.config.source import Node
from gateway.config.settings import GeoIpSettings, SecuritySettings

IPAPI_REPLACED = (
    "the gateway no longer calls ipapi.is; anonymizer checks use local MaxMind databases instead: set "
    "GeoIp.AnonymousIpDatabase to a GeoIP2 Anonymous IP .mmdb file (VPN, proxy, Tor and hosting flags) "
    "and optionally GeoIp.AsnDatabase to an ASN .mmdb with GeoIp.HostingAsns; Security.BlockVpn, BlockProxy, "
    "BlockDatacenter and BlockTor keep their meaning. Remove this key to silence this warning."
)
_IPAPI_KEY_REPLACED = (
    "ignored: the ipapi.is check is replaced by local MaxMind databases; set GeoIp.AnonymousIpDatabase "
    "(and optionally GeoIp.AsnDatabase) and remove this key"
)


def _prefix_length(binder: Binder, section: Section, default: int) -> int:
    value = binder.integer(section.child_path("Ipv6PrefixLength"), section.take("Ipv6PrefixLength"),
                           minimum=1, maximum=128, hint="; the bits of an IPv6 address that count as one client (64 "
                           "is one customer's subnet, 128 a single address)")
    return default if value is None else value


def bind_security(binder: Binder, section: Section | None, geoip: GeoIpSettings) -> SecuritySettings:
    defaults = SecuritySettings()
    # Read even when absent: an empty webhook token deserves its warning either way.
    section = section or Section(Node(), "Security")

    def count(name: str, default: int) -> int:
        value = binder.integer(section.child_path(name), section.take(name), minimum=0, hint="; use 0 for unlimited")
        return default if value is None else value

    def flag(name: str, default: bool) -> bool:
        value = binder.boolean(section.child_path(name), section.take(name))
        return default if value is None else value

    token_path = section.child_path("WebhookApiToken")
    token = binder.string(token_path, section.take("WebhookApiToken"))
    result = SecuritySettings(
        rate_limit_hourly=count("RateLimitHourly", defaults.rate_limit_hourly),
        rate_limit_daily=count("RateLimitDaily", defaults.rate_limit_daily),
        rate_limit_concurrency=count("RateLimitConcurrency", defaults.rate_limit_concurrency),
        per_ip_rate_limit_hourly=count("PerIpRateLimitHourly", defaults.per_ip_rate_limit_hourly),
        per_ip_rate_limit_daily=count("PerIpRateLimitDaily", defaults.per_ip_rate_limit_daily),
        per_ip_rate_limit_concurrency=count("PerIpRateLimitConcurrency", defaults.per_ip_rate_limit_concurrency),
        webhook_api_token=token or "",
        block_vpn=flag("BlockVpn", defaults.block_vpn),
        block_proxy=flag("BlockProxy", defaults.block_proxy),
        block_datacenter=flag("BlockDatacenter", defaults.block_datacenter),
        block_tor=flag("BlockTor", defaults.block_tor),
        ipv6_prefix_length=_prefix_length(binder, section, defaults.ipv6_prefix_length),
    )
    for legacy in ("EnableIpApiCheck", "EnableIpApiCache", "IpApiCacheDurationDays"):
        if section.take(legacy) is not None:
            binder.warn(section.child_path(legacy), _IPAPI_KEY_REPLACED)
    if not result.webhook_api_token and not failed(binder.problems, token_path):
        binder.warn(token_path, "is empty: the session-ended webhook will answer 401 to every call; set a long random token")
    anonymous_flags = [("BlockVpn", result.block_vpn), ("BlockProxy", result.block_proxy), ("BlockTor", result.block_tor)]
    # A Block* flag that cannot block is a start-up error, not a warning: an operator who asked for
    # blocking must not get a gateway that silently lets everyone through (the original's file sets
    # BlockVpn for its paid lookup service, which MaxMind databases replace).
    for name, on in anonymous_flags:
        if on and geoip.anonymous_ip_database is None:
            binder.problem(
                section.child_path(name),
                "is true but GeoIp.AnonymousIpDatabase is not set, so nothing could be detected or blocked; "
                "set it to a GeoIP2-Anonymous-IP .mmdb file, or set this flag to false",
            )
    if result.block_datacenter and geoip.anonymous_ip_database is None and geoip.asn_database is None and not geoip.blocked_networks:
        binder.problem(
            section.child_path("BlockDatacenter"),
            "is true but neither GeoIp.AnonymousIpDatabase nor GeoIp.AsnDatabase is set, so datacenters could not "
            "be detected; set one of them, or set this flag to false",
        )
    binder.warn_unknown(section)
    return result


def bind_geoip(binder: Binder, section: Section | None) -> GeoIpSettings:
    if section is None:
        return GeoIpSettings()
    result = GeoIpSettings(
        anonymous_ip_database=_database(binder, section, "AnonymousIpDatabase"),
        asn_database=_database(binder, section, "AsnDatabase"),
        hosting_asns=binder.list_of(section, "HostingAsns", binder.asn),
        allowed_networks=binder.list_of(section, "AllowedNetworks", binder.network),
        blocked_networks=binder.list_of(section, "BlockedNetworks", binder.network),
    )
    binder.warn_unknown(section)
    return result


def _database(binder: Binder, section: Section, name: str) -> str | None:
    path = section.child_path(name)
    value = binder.string(path, section.take(name))
    if value is None or not value.strip():
        return None
    # Checked now so a wrong path stops start-up instead of failing every request later.
    if not os.path.isfile(value):
        binder.problem(path, f"file {value!r} not found (relative paths start at the working directory {os.getcwd()!r})", value)
        return None
    return value
