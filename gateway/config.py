"""Load :class:`~gateway.settings.Settings` from ``appsettings.json`` and the environment, the ASP.NET way.

The original middleware's file works unchanged: keys match case-insensitively, ``//`` and ``/* */``
comments and trailing commas are allowed (as ASP.NET's JSON provider allows them), and environment
variables override keys with ``__`` between segments (``VoiceAiPlatform__Campaigns__X__AllowedRegionIds__1``).
Values from the environment are strings, converted to each key's type.

Every problem is collected before :class:`ConfigError` is raised, so an operator fixes the file in one pass;
suspicious but workable settings become warnings.

Decisions:

* As in ASP.NET, a number written as a string (``"RateLimitHourly": "3"``) binds, and an id written as a
  number binds to a string; a fraction, or ``true``, where a whole number belongs is an error.
* Without ``Concurrency.MaxConcurrentSessions`` the cap comes from the platform's billing endpoints
  (``SyncFromPlatform`` defaults to true then); with ``SyncFromPlatform: false`` a global cap is required.
  Per-campaign caps do not replace the global one.
* Campaign names are matched case-sensitively in requests (the original bound them into an ordinal
  dictionary), although two names differing only in case are refused in the file.
* ``GeoIp`` database paths must name existing files (relative to the working directory), so a typo stops
  start-up instead of silently disabling anonymizer blocking.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from redis.connection import parse_url

from gateway.errors import ConfigError
from gateway.settings import (
    DEFAULT_BASE_URL,
    CampaignSettings,
    ConcurrencySettings,
    ForwardedHeadersSettings,
    GeoIpSettings,
    PlatformSettings,
    QueueSettings,
    SecuritySettings,
    Settings,
    frozen_campaigns,
)

__all__ = ["ConfigError", "LoadedSettings", "load_settings", "parse_redis_connection_string"]

T = TypeVar("T")

#: Top-level keys we read; only environment variables under one of these are considered.
TOP_LEVEL_KEYS = (
    "AllowedOrigins",
    "ForwardedHeaders",
    "RedisConnectionString",
    "VoiceAiPlatform",
    "Concurrency",
    "Queue",
    "Security",
    "GeoIp",
    "IpApi",
    "Logging",
    "AllowedHosts",
)

_IPAPI_REPLACED = (
    "the gateway no longer calls ipapi.is; anonymizer checks use local MaxMind databases instead: set "
    "GeoIp.AnonymousIpDatabase to a GeoIP2 Anonymous IP .mmdb file (VPN, proxy, Tor and hosting flags) "
    "and optionally GeoIp.AsnDatabase to an ASN .mmdb with GeoIp.HostingAsns; Security.BlockVpn, BlockProxy, "
    "BlockDatacenter and BlockTor keep their meaning. Remove this key to silence this warning."
)
_IPAPI_KEY_REPLACED = (
    "ignored: the ipapi.is check is replaced by local MaxMind databases; set GeoIp.AnonymousIpDatabase "
    "(and optionally GeoIp.AsnDatabase) and remove this key"
)
#: The platform's audio WebSocket token is valid this long after initiate.
_PLATFORM_TOKEN_SECONDS = 300
_MAX_ASN = 2**32 - 1


@dataclass(frozen=True, slots=True)
class LoadedSettings:
    """The result of loading: usable settings plus what the operator should look at.

    :param settings: the validated settings.
    :param warnings: one line each, ``"Key.Path: ..."``; log them at start-up.
    """

    settings: Settings
    warnings: tuple[str, ...]


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Read, merge and validate the configuration.

    :param path: an ``appsettings.json`` file; ``None`` with ``data`` also ``None`` starts from no keys.
    :param data: the parsed file contents instead of ``path`` (for tests and embedding).
    :param environ: environment variables; ``None`` means :data:`os.environ`.
    :return: the settings and the warnings.
    :raises ConfigError: listing every problem found.
    """
    if path is not None and data is not None:
        raise TypeError("load_settings takes a path or data, not both")
    try:
        if path is not None:
            root = _read_file(os.fspath(path))
        elif data is not None:
            root = _node_from_mapping(data)
        else:
            root = _Node()
    except _TreeError as exc:
        raise ConfigError(exc.problems) from None
    env_warnings = _apply_environment(root, os.environ if environ is None else environ, TOP_LEVEL_KEYS)
    binder = _Binder()
    binder.warnings.extend(env_warnings)
    settings = binder.bind_settings(root)
    if binder.problems or settings is None:
        raise ConfigError(binder.problems)
    return LoadedSettings(settings=settings, warnings=tuple(binder.warnings))


def parse_redis_connection_string(value: str) -> str:
    """Turn ``RedisConnectionString`` into a URL redis-py accepts.

    Accepts URLs (``redis://``, ``rediss://``, ``unix://``) as they are, and the StackExchange.Redis form the
    original used: ``host[:port][,password=...][,user=...][,ssl=true][,defaultDatabase=N][,name=...]``.
    Other StackExchange options are ignored (:func:`load_settings` reports them as warnings).

    :param value: the connection string; must not be empty.
    :return: a ``redis://``, ``rediss://`` or ``unix://`` URL.
    :raises ConfigError: when the string cannot be understood.
    """
    url, _warnings, problems = _parse_redis("RedisConnectionString", value)
    if problems or url is None:
        raise ConfigError(problems)
    return url


def _read_file(path: str) -> _Node:
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found; pass the path of appsettings.json"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot be read ({exc})"]) from None
    return _node_from_json_text(text, source=path)


# --------------------------------------------------------------------------------------------- binding


class _Section:
    """A view of one JSON object that remembers which keys were read, to warn about the rest."""

    def __init__(self, node: _Node, path: str) -> None:
        self.node = node
        self.path = path
        self._used: set[str] = set()

    def child_path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def take(self, name: str) -> Any:
        """The value under ``name`` (any casing), or ``None``."""
        key = name.casefold()
        self._used.add(key)
        entry = self.node.entries.get(key)
        return None if entry is None else entry[1]

    def has(self, name: str) -> bool:
        entry = self.node.entries.get(name.casefold())
        return entry is not None and entry[1] is not None

    def unused(self) -> Iterator[str]:
        for key, (spelling, _value) in self.node.entries.items():
            if key not in self._used:
                yield spelling


class _Binder:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []
        #: Known before the leases are checked, even when the platform section has other problems.
        self.request_timeout = PlatformSettings(api_secret_token="", base_url="", campaigns={}).request_timeout_seconds

    # ---- reporting

    def problem(self, path: str, text: str, value: Any = None) -> None:
        self.problems.append(f"{path}: {text}{_source(value)}")

    def warn(self, path: str, text: str) -> None:
        self.warnings.append(f"{path}: {text}")

    def warn_unknown(self, section: _Section) -> None:
        for spelling in section.unused():
            self.warn(section.child_path(spelling), "unknown key, ignored")

    # ---- shapes

    def section(self, parent: _Section | None, name: str) -> _Section | None:
        """A nested object, or ``None`` when absent (or wrong, which is reported)."""
        value = parent.take(name) if parent is not None else None
        path = parent.child_path(name) if parent is not None else name
        if value is None:
            return None
        if not isinstance(value, _Node) or value.is_array:
            self.problem(path, "must be a JSON object ({ ... })", value)
            return None
        return _Section(value, path)

    def items(self, section: _Section, name: str) -> list[tuple[str, Any]] | None:
        """The elements of a list, in index order; ``None`` when absent or wrong."""
        value = section.take(name)
        path = section.child_path(name)
        if value is None:
            return None
        if not isinstance(value, _Node):
            self.problem(path, "must be a JSON list ([ ... ])", value)
            return None
        indexed: list[tuple[int, Any]] = []
        for key, (spelling, item) in value.entries.items():
            if not (key.isascii() and key.isdigit()):
                self.problem(path, f"must be a JSON list, but has the named key {spelling!r}; list items are numbered from 0")
                return None
            indexed.append((int(key), item))
        # ASP.NET binds list items in index order and closes gaps; so do we.
        return [(f"{path}[{index}]", item) for index, item in sorted(indexed, key=lambda pair: pair[0])]

    def list_of(self, section: _Section, name: str, convert: Callable[[str, Any], T | None]) -> tuple[T, ...]:
        out: list[T] = []
        for path, item in self.items(section, name) or ():
            converted = convert(path, item)
            if converted is not None:
                out.append(converted)
        return tuple(out)

    # ---- scalars

    def string(self, path: str, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return str(value)  # a plain str, even for a value from the environment
        # ASP.NET stores every JSON scalar as text, so a numeric id written without quotes still binds.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        self.problem(path, "must be a string", value)
        return None

    def required_string(self, section: _Section, name: str, how: str) -> str | None:
        path = section.child_path(name)
        value = self.string(path, section.take(name))
        if value is None and not _failed(self.problems, path):
            self.problem(path, f"missing; {how}")
        elif value is not None and not value.strip():
            self.problem(path, f"is empty; {how}")
            return None
        return value

    def integer(self, path: str, value: Any, *, minimum: int, maximum: int | None = None, hint: str = "") -> int | None:
        if value is None:
            return None
        number: int | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", value):
            number = int(value)
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        if number is None:
            self.problem(path, f"must be a whole number {bounds}, got {_show(value)}{hint}", value)
            return None
        if number < minimum or (maximum is not None and number > maximum):
            self.problem(path, f"must be {bounds}, got {number}{hint}", value)
            return None
        return number

    def seconds(self, path: str, value: Any) -> float | None:
        if value is None:
            return None
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None or not math.isfinite(number) or number <= 0:
            self.problem(path, f"must be a number of seconds greater than 0, got {_show(value)}", value)
            return None
        return number

    def boolean(self, path: str, value: Any) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.problem(path, f"must be true or false, got {_show(value)}", value)
        return None

    def address(self, path: str, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        try:
            return str(ipaddress.ip_address(text.strip()))
        except ValueError:
            self.problem(path, f"{text!r} is not an IP address (e.g. 172.19.0.1 or ::1); networks go in KnownNetworks", value)
            return None

    def network(self, path: str, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        try:
            return str(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            self.problem(path, f"{text!r} is not a network in CIDR form (e.g. 10.0.0.0/8 or 2001:db8::/32)", value)
            return None

    def asn(self, path: str, value: Any) -> int | None:
        if isinstance(value, str) and value.strip().upper().startswith("AS"):
            value = value.strip()[2:]
        return self.integer(path, value, minimum=1, maximum=_MAX_ASN, hint=" (an AS number such as 15169 or \"AS15169\")")

    # ---- sections

    def bind_settings(self, root: _Node) -> Settings | None:
        top = _Section(root, "")
        origins = self.list_of(top, "AllowedOrigins", self.origin)
        forwarded = self.bind_forwarded(self.section(top, "ForwardedHeaders"))
        redis_url = self.bind_redis(top)
        platform = self.bind_platform(self.section(top, "VoiceAiPlatform"))
        queue = self.bind_queue(self.section(top, "Queue"))
        geoip = self.bind_geoip(self.section(top, "GeoIp"))
        security = self.bind_security(self.section(top, "Security"), geoip)
        concurrency = self.bind_concurrency(self.section(top, "Concurrency"))
        if top.take("IpApi") is not None:
            self.warn("IpApi", _IPAPI_REPLACED)
        top.take("Logging")  # ASP.NET's logging section: our logging is set up by the command line.
        top.take("AllowedHosts")  # ASP.NET host filtering: the reverse proxy's job here.
        self.warn_unknown(top)
        if platform is None or concurrency is None:
            return None
        return Settings(
            allowed_origins=origins,
            forwarded_headers=forwarded,
            redis_url=redis_url,
            platform=platform,
            concurrency=concurrency,
            queue=queue,
            security=security,
            geoip=geoip,
        )

    def origin(self, path: str, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        text = text.strip()
        if text == "*":
            return text
        parts = urlsplit(text)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
            self.problem(path, f"{text!r} is not an origin; write scheme://host[:port], e.g. https://www.example.com, or * for any", value)
            return None
        return f"{parts.scheme.lower()}://{parts.netloc.lower()}"

    def bind_forwarded(self, section: _Section | None) -> ForwardedHeadersSettings:
        if section is None:
            return ForwardedHeadersSettings()
        result = ForwardedHeadersSettings(
            known_proxies=self.list_of(section, "KnownProxies", self.address),
            known_networks=self.list_of(section, "KnownNetworks", self.network),
        )
        self.warn_unknown(section)
        return result

    def bind_redis(self, top: _Section) -> str | None:
        path = top.child_path("RedisConnectionString")
        value = self.string(path, top.take("RedisConnectionString"))
        if value is None or not value.strip():
            return None
        url, warnings, problems = _parse_redis(path, value)
        self.warnings.extend(warnings)
        self.problems.extend(problems)
        return url

    def bind_platform(self, section: _Section | None) -> PlatformSettings | None:
        if section is None:
            self.problem("VoiceAiPlatform", "missing; add the section with ApiSecretToken, BaseUrl and Campaigns")
            return None
        token = self.required_string(section, "ApiSecretToken", "set it to the platform API key (iqra_sk_...)")
        base_url = self.base_url(section.child_path("BaseUrl"), section.take("BaseUrl"))
        campaigns = self.bind_campaigns(section)
        connect = self.seconds(section.child_path("ConnectTimeoutSeconds"), section.take("ConnectTimeoutSeconds"))
        request = self.seconds(section.child_path("RequestTimeoutSeconds"), section.take("RequestTimeoutSeconds"))
        if request is not None:
            self.request_timeout = request
        self.warn_unknown(section)
        if token is None or base_url is None or campaigns is None:
            return None
        defaults = PlatformSettings(api_secret_token="", base_url="", campaigns={})
        return PlatformSettings(
            api_secret_token=token,
            base_url=base_url,
            campaigns=frozen_campaigns(campaigns),
            connect_timeout_seconds=defaults.connect_timeout_seconds if connect is None else connect,
            request_timeout_seconds=defaults.request_timeout_seconds if request is None else request,
        )

    def base_url(self, path: str, value: Any) -> str | None:
        if value is None:
            return DEFAULT_BASE_URL
        text = self.string(path, value)
        if text is None:
            return None
        parts = urlsplit(text.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            self.problem(path, f"{text!r} is not an http(s) URL; use the platform API root, e.g. {DEFAULT_BASE_URL}", value)
            return None
        text = text.strip()
        # Relative request paths are joined under BaseUrl, which only works when it ends in "/".
        return text if text.endswith("/") else text + "/"

    def bind_campaigns(self, platform: _Section) -> dict[str, CampaignSettings] | None:
        campaigns_section = self.section(platform, "Campaigns")
        path = platform.child_path("Campaigns")
        example = '"Campaigns": {"MyCampaign": {"BusinessId": "...", "WebCampaignId": "...", "AllowedRegionIds": ["EU-DE"]}}'
        if campaigns_section is None:
            if not _failed(self.problems, path):
                self.problem(path, f"missing; add at least one campaign, e.g. {example}")
            return None
        if not campaigns_section.node.entries:
            self.problem(path, f"is empty; add at least one campaign, e.g. {example}")
            return None
        campaigns: dict[str, CampaignSettings] = {}
        ok = True
        for _key, (name, _value) in list(campaigns_section.node.entries.items()):
            campaign = self.bind_campaign(campaigns_section, name)
            if campaign is None:
                ok = False
            else:
                campaigns[name] = campaign
        return campaigns if ok else None

    def bind_campaign(self, campaigns: _Section, name: str) -> CampaignSettings | None:
        section = self.section(campaigns, name)
        if section is None:
            return None
        if not name.strip():
            self.problem(section.path, "a campaign needs a non-empty name (the campaignId browsers send)")
        business_id = self.required_string(section, "BusinessId", "set it to the platform business id that owns the campaign")
        web_campaign_id = self.required_string(section, "WebCampaignId", "set it to the platform's web campaign id")
        regions_path = section.child_path("AllowedRegionIds")
        regions = self.list_of(section, "AllowedRegionIds", self.region)
        if not regions and not _failed(self.problems, regions_path):
            self.warn(regions_path, "no regions: every request for this campaign will be refused; list e.g. [\"EU-DE\"]")
        cap = self.integer(section.child_path("MaxConcurrentSessions"), section.take("MaxConcurrentSessions"), minimum=0)
        if cap == 0:
            self.warn(section.child_path("MaxConcurrentSessions"), "is 0: every request for this campaign will be queued")
        if business_id is not None and not business_id.strip().isdigit():
            self.warn(section.child_path("BusinessId"), f"{business_id!r} is not numeric; the platform's business ids are numbers")
        self.warn_unknown(section)
        if business_id is None or web_campaign_id is None or not name.strip():
            return None
        return CampaignSettings(
            name=name,
            business_id=business_id.strip(),
            web_campaign_id=web_campaign_id.strip(),
            allowed_region_ids=regions,
            max_concurrent_sessions=cap,
        )

    def region(self, path: str, value: Any) -> str | None:
        text = self.string(path, value)
        if text is not None and not text.strip():
            self.problem(path, "is empty; a region id looks like \"EU-DE\"")
            return None
        return text

    def bind_concurrency(self, section: _Section | None) -> ConcurrencySettings | None:
        defaults = ConcurrencySettings()
        s = section or _Section(_Node(), "Concurrency")
        cap = self.integer(s.child_path("MaxConcurrentSessions"), s.take("MaxConcurrentSessions"), minimum=0)
        sync_value = s.take("SyncFromPlatform")
        sync = self.boolean(s.child_path("SyncFromPlatform"), sync_value)
        session_lease = self.integer(s.child_path("SessionLeaseSeconds"), s.take("SessionLeaseSeconds"), minimum=1)
        pending_lease = self.integer(s.child_path("PendingLeaseSeconds"), s.take("PendingLeaseSeconds"), minimum=1)
        interval = self.seconds(s.child_path("SyncIntervalSeconds"), s.take("SyncIntervalSeconds"))
        self.warn_unknown(s)
        failed = len(self.problems)
        cap_given = s.has("MaxConcurrentSessions")
        if sync is None and sync_value is None:
            # An existing deployment's file has no cap: as the original, learn it from the platform.
            sync = not cap_given
        if sync is False and not cap_given:
            self.problem(
                "Concurrency",
                "no session cap: set Concurrency.MaxConcurrentSessions to the number of sessions the gateway may "
                "hold at once, or set Concurrency.SyncFromPlatform to true to read the cap from the platform's "
                "billing endpoints",
            )
        if cap == 0:
            self.warn(s.child_path("MaxConcurrentSessions"), "is 0: every request will be queued")
        session_lease = defaults.session_lease_seconds if session_lease is None else session_lease
        pending_lease = defaults.pending_lease_seconds if pending_lease is None else pending_lease
        if pending_lease >= session_lease:
            self.problem(
                s.child_path("PendingLeaseSeconds"),
                f"({pending_lease}) must be shorter than Concurrency.SessionLeaseSeconds ({session_lease}); "
                "lower it or raise SessionLeaseSeconds",
            )
        if pending_lease <= self.request_timeout:
            self.problem(
                s.child_path("PendingLeaseSeconds"),
                f"({pending_lease}) must be longer than VoiceAiPlatform.RequestTimeoutSeconds "
                f"({self.request_timeout:g}), or a slow platform call could outlive its reservation; "
                "raise it or lower RequestTimeoutSeconds",
            )
        if len(self.problems) > failed or sync is None:
            return None
        return ConcurrencySettings(
            max_concurrent_sessions=cap,
            session_lease_seconds=session_lease,
            pending_lease_seconds=pending_lease,
            sync_from_platform=sync,
            sync_interval_seconds=defaults.sync_interval_seconds if interval is None else interval,
        )

    def bind_queue(self, section: _Section | None) -> QueueSettings:
        defaults = QueueSettings()
        if section is None:
            return defaults

        def read(name: str, default: int, minimum: int) -> int:
            value = self.integer(section.child_path(name), section.take(name), minimum=minimum)
            return default if value is None else value

        result = QueueSettings(
            max_length=read("MaxLength", defaults.max_length, 1),
            ready_ttl_seconds=read("ReadyTtlSeconds", defaults.ready_ttl_seconds, 1),
            register_timeout_seconds=read("RegisterTimeoutSeconds", defaults.register_timeout_seconds, 1),
            disconnect_grace_seconds=read("DisconnectGraceSeconds", defaults.disconnect_grace_seconds, 0),
        )
        if result.ready_ttl_seconds > _PLATFORM_TOKEN_SECONDS:
            self.warn(
                section.child_path("ReadyTtlSeconds"),
                f"is {result.ready_ttl_seconds} s, but the platform's audio WebSocket token expires "
                f"{_PLATFORM_TOKEN_SECONDS} s after initiate; a URL kept longer will be refused",
            )
        self.warn_unknown(section)
        return result

    def bind_security(self, section: _Section | None, geoip: GeoIpSettings) -> SecuritySettings:
        defaults = SecuritySettings()
        # Read even when absent: an empty webhook token deserves its warning either way.
        section = section or _Section(_Node(), "Security")

        def count(name: str, default: int) -> int:
            value = self.integer(section.child_path(name), section.take(name), minimum=0, hint="; use 0 for unlimited")
            return default if value is None else value

        def flag(name: str, default: bool) -> bool:
            value = self.boolean(section.child_path(name), section.take(name))
            return default if value is None else value

        token_path = section.child_path("WebhookApiToken")
        token = self.string(token_path, section.take("WebhookApiToken"))
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
        )
        for legacy in ("EnableIpApiCheck", "EnableIpApiCache", "IpApiCacheDurationDays"):
            if section.take(legacy) is not None:
                self.warn(section.child_path(legacy), _IPAPI_KEY_REPLACED)
        if not result.webhook_api_token and not _failed(self.problems, token_path):
            self.warn(token_path, "is empty: the session-ended webhook will answer 401 to every call; set a long random token")
        anonymous_flags = [("BlockVpn", result.block_vpn), ("BlockProxy", result.block_proxy), ("BlockTor", result.block_tor)]
        # A Block* flag that cannot block is a start-up error, not a warning: an operator who asked for
        # blocking must not get a gateway that silently lets everyone through (the original's file sets
        # BlockVpn for its paid lookup service, which MaxMind databases replace).
        for name, on in anonymous_flags:
            if on and geoip.anonymous_ip_database is None:
                self.problem(
                    section.child_path(name),
                    "is true but GeoIp.AnonymousIpDatabase is not set, so nothing could be detected or blocked; "
                    "set it to a GeoIP2-Anonymous-IP .mmdb file, or set this flag to false",
                )
        if result.block_datacenter and geoip.anonymous_ip_database is None and geoip.asn_database is None and not geoip.blocked_networks:
            self.problem(
                section.child_path("BlockDatacenter"),
                "is true but neither GeoIp.AnonymousIpDatabase nor GeoIp.AsnDatabase is set, so datacenters could not "
                "be detected; set one of them, or set this flag to false",
            )
        self.warn_unknown(section)
        return result

    def bind_geoip(self, section: _Section | None) -> GeoIpSettings:
        if section is None:
            return GeoIpSettings()
        result = GeoIpSettings(
            anonymous_ip_database=self.database(section, "AnonymousIpDatabase"),
            asn_database=self.database(section, "AsnDatabase"),
            hosting_asns=self.list_of(section, "HostingAsns", self.asn),
            allowed_networks=self.list_of(section, "AllowedNetworks", self.network),
            blocked_networks=self.list_of(section, "BlockedNetworks", self.network),
        )
        self.warn_unknown(section)
        return result

    def database(self, section: _Section, name: str) -> str | None:
        path = section.child_path(name)
        value = self.string(path, section.take(name))
        if value is None or not value.strip():
            return None
        # Checked now so a wrong path stops start-up instead of failing every request later.
        if not os.path.isfile(value):
            self.problem(path, f"file {value!r} not found (relative paths start at the working directory {os.getcwd()!r})", value)
            return None
        return value


# ------------------------------------------------------------------------------------------------ redis

_STACKEXCHANGE_IGNORED = "ignored (a StackExchange.Redis option the gateway does not use)"


def _parse_redis(path: str, value: str) -> tuple[str | None, list[str], list[str]]:
    """``(url, warnings, problems)`` for a connection string of either style."""
    text = value.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme:
        if scheme not in ("redis", "rediss", "unix"):
            return None, [], [f"{path}: unsupported scheme {scheme!r}; use redis://, rediss:// or unix://, or host:port"]
        try:
            parse_url(text)
        except ValueError as exc:
            return None, [], [f"{path}: not a valid Redis URL ({exc})"]
        return text, [], []

    warnings: list[str] = []
    problems: list[str] = []
    endpoints: list[str] = []
    password = user = name = None
    ssl = False
    database = 0
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        if "=" not in part:
            endpoints.append(part)
            continue
        option, _, setting = part.partition("=")
        option = option.strip().lower()
        setting = setting.strip()
        if option == "password":
            password = setting
        elif option == "user":
            user = setting
        elif option == "name":
            name = setting
        elif option == "ssl":
            if setting.lower() not in ("true", "false"):
                problems.append(f"{path}: ssl={setting!r} must be true or false")
            ssl = setting.lower() == "true"
        elif option == "defaultdatabase":
            if not setting.isdigit():
                problems.append(f"{path}: defaultDatabase={setting!r} must be a whole number >= 0")
            else:
                database = int(setting)
        else:
            warnings.append(f"{path}: option {option}={setting!r} {_STACKEXCHANGE_IGNORED}")
    if not endpoints:
        problems.append(f"{path}: no host; write host:port (e.g. localhost:6379) or a redis:// URL, or leave it empty for the embedded store")
        return None, warnings, problems
    if len(endpoints) > 1:
        warnings.append(f"{path}: several endpoints given; only the first ({endpoints[0]}) is used")
    host, port = _split_endpoint(endpoints[0])
    if port is None:
        problems.append(f"{path}: endpoint {endpoints[0]!r} must be host or host:port with a port between 1 and 65535")
    if problems:
        return None, warnings, problems
    credentials = ""
    if user is not None or password is not None:
        credentials = quote(user or "", safe="") + (":" + quote(password, safe="") if password is not None else "") + "@"
    url = f"{'rediss' if ssl else 'redis'}://{credentials}{host}:{port}/{database}"
    if name:
        url += "?client_name=" + quote(name, safe="")
    return url, warnings, problems


def _split_endpoint(endpoint: str) -> tuple[str, int | None]:
    """``("host", port)``; a bracketed IPv6 host keeps its brackets for the URL. Port ``None`` = invalid."""
    match = re.fullmatch(r"\[([^\]]+)\](?::([0-9]{1,5}))?|([^:\[\]]+)(?::([0-9]{1,5}))?|([0-9A-Fa-f:]+)", endpoint)
    if match is None:
        return endpoint, None
    if match.group(1) is not None:
        host, port_text = f"[{match.group(1)}]", match.group(2)
    elif match.group(3) is not None:
        host, port_text = match.group(3), match.group(4)
    else:
        host, port_text = f"[{match.group(5)}]", None
    port = 6379 if port_text is None else int(port_text)
    return host, port if 0 < port < 65536 else None


# ------------------------------------------------------------------------------------- the merged tree


class _Node:
    """One JSON object or list after merging; keys are matched case-insensitively, as ASP.NET does.

    ``entries`` maps the case-folded key to ``(spelling, value)``; list items use keys ``"0"``, ``"1"``...
    Values are nested nodes or JSON scalars (``str``, ``int``, ``float``, ``bool``, ``None``).
    """

    __slots__ = ("entries", "is_array")

    def __init__(self, *, is_array: bool = False) -> None:
        self.entries: dict[str, tuple[str, Any]] = {}
        self.is_array = is_array


class _EnvValue(str):
    """A string that came from an environment variable, so messages can name the variable."""

    variable: str

    def __new__(cls, value: str, variable: str) -> _EnvValue:
        self = super().__new__(cls, value)
        self.variable = variable
        return self


class _TreeError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object's members in file order, duplicates kept, so they can be reported with their path."""


def _node_from_json_text(text: str, *, source: str) -> _Node:
    try:
        parsed = json.loads(_strip_comments(text), object_pairs_hook=_Pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _TreeError([f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"]) from None
    except ValueError as exc:
        raise _TreeError([f"{source}: not valid JSON: {exc}"]) from None
    if not isinstance(parsed, _Pairs):
        raise _TreeError([f"{source}: the file must hold one JSON object ({{ ... }})"])
    return _node_from_mapping(parsed)


def _node_from_mapping(data: Mapping[str, Any] | _Pairs) -> _Node:
    problems: list[str] = []
    node = _convert(data, "", problems)
    if problems:
        raise _TreeError(problems)
    assert isinstance(node, _Node)
    return node


def _convert(value: Any, path: str, problems: list[str]) -> Any:
    if isinstance(value, (_Pairs, Mapping)):
        node = _Node()
        pairs = value if isinstance(value, _Pairs) else list(value.items())
        for key, item in pairs:
            key = str(key)
            child = f"{path}.{key}" if path else key
            folded = key.casefold()
            if folded in node.entries:
                # ASP.NET refuses such a file too: its keys are case-insensitive.
                problems.append(f"{child}: given twice (keys are case-insensitive: {node.entries[folded][0]!r} and {key!r}); keep one")
                continue
            node.entries[folded] = (key, _convert(item, child, problems))
        return node
    if isinstance(value, (list, tuple)):
        node = _Node(is_array=True)
        for index, item in enumerate(value):
            node.entries[str(index)] = (str(index), _convert(item, f"{path}[{index}]", problems))
        return node
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _strip_comments(text: str) -> str:
    """Blank out comments and trailing commas, keeping every line and column where it was."""
    out = list(text)
    i, n = 0, len(text)
    last_comma = -1  # index of a comma that may turn out to be trailing
    while i < n:
        ch = text[i]
        if ch == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            last_comma = -1
            continue
        if ch == "/" and i + 1 < n and text[i + 1] in "/*":
            end = text.find("\n", i) if text[i + 1] == "/" else text.find("*/", i + 2)
            end = n if end < 0 else (end if text[i + 1] == "/" else end + 2)
            for j in range(i, end):
                if out[j] != "\n":
                    out[j] = " "
            i = end
            continue
        if ch == ",":
            last_comma = i
        elif ch in "}]" and last_comma >= 0:
            out[last_comma] = " "
            last_comma = -1
        elif not ch.isspace():
            last_comma = -1
        i += 1
    return "".join(out)


def _apply_environment(root: _Node, environ: Mapping[str, str], top_level: tuple[str, ...]) -> list[str]:
    """Overlay ``Section__Key__0`` variables on the tree, as ASP.NET's environment provider does.

    :return: warnings about variables that could not be applied.
    """
    warnings: list[str] = []
    known = {name.casefold() for name in top_level}
    for variable in sorted(environ):
        segments = variable.replace("__", ":").split(":")
        if segments[0].casefold() not in known or any(not segment for segment in segments):
            continue
        node = root
        for segment in segments[:-1]:
            folded = segment.casefold()
            entry = node.entries.get(folded)
            if entry is None or not isinstance(entry[1], _Node):
                child = _Node()
                node.entries[folded] = (entry[0] if entry else segment, child)
                node = child
            else:
                node = entry[1]
        last = segments[-1]
        entry = node.entries.get(last.casefold())
        if entry is not None and isinstance(entry[1], _Node):
            # ASP.NET keeps a section's own value beside its children and never binds it; say so instead.
            warnings.append(f"{variable}: sets a value on the section {entry[0]!r}, which has keys of its own; ignored")
            continue
        node.entries[last.casefold()] = (entry[0] if entry else last, _EnvValue(environ[variable], variable))
    return warnings


# ------------------------------------------------------------------------------------------------ helpers


def _show(value: Any) -> str:
    if isinstance(value, _Node):
        return "a list" if value.is_array else "an object"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _source(value: Any) -> str:
    if isinstance(value, _EnvValue):
        return f" (from environment variable {value.variable})"
    return ""


def _failed(problems: list[str], path: str) -> list[str]:
    """Problems already reported for ``path``, so a wrong type is not also called missing."""
    return [p for p in problems if p.startswith((path + ":", path + " ", path + "["))]
