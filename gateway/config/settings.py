"""The gateway's typed, immutable settings, with their defaults. No I/O here: ``gateway.config`` loads them.

Each class mirrors one section of ``appsettings.json``; the docstrings name the JSON key of each field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT_BASE_URL = "https://app.iqra.bot/api/v1/"


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignSettings:
    """One public campaign (``VoiceAiPlatform.Campaigns.<name>``).

    :param name: the public name browsers send as ``campaignId``.
    :param business_id: ``BusinessId``, the platform business the session is billed to.
    :param web_campaign_id: ``WebCampaignId``, the platform's web campaign.
    :param allowed_region_ids: ``AllowedRegionIds``, regions a request may name (exact, case-sensitive).
    :param max_concurrent_sessions: ``MaxConcurrentSessions``, this campaign's own cap; ``None`` = no own cap.
    """

    name: str
    business_id: str
    web_campaign_id: str
    allowed_region_ids: tuple[str, ...]
    max_concurrent_sessions: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformSettings:
    """How to reach the Iqra platform (``VoiceAiPlatform``).

    :param api_secret_token: ``ApiSecretToken``, sent as ``Authorization: Token <value>``.
    :param base_url: ``BaseUrl``, always ending in ``/`` so relative paths join under it.
    :param campaigns: ``Campaigns``, keyed by public campaign name (case-sensitive, as the original).
    :param connect_timeout_seconds: ``ConnectTimeoutSeconds``.
    :param request_timeout_seconds: ``RequestTimeoutSeconds``, for a whole platform request.
    """

    api_secret_token: str
    base_url: str
    campaigns: Mapping[str, CampaignSettings]
    connect_timeout_seconds: float = 5.0
    request_timeout_seconds: float = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConcurrencySettings:
    """Global session admission (``Concurrency``).

    :param max_concurrent_sessions: ``MaxConcurrentSessions``, the global cap; ``None`` = learned from
        the platform's billing endpoints.
    :param session_lease_seconds: ``SessionLeaseSeconds``, how long an admitted session holds its slot
        without a session-ended webhook.
    :param pending_lease_seconds: ``PendingLeaseSeconds``, how long a slot is held while the platform call
        that fills it is in flight.
    :param sync_from_platform: ``SyncFromPlatform``, poll the billing endpoints for the account's cap and
        usage. Defaults to true when no global cap is configured.
    :param sync_interval_seconds: ``SyncIntervalSeconds``, the poll period (the original's 15 s).
    :param max_dispatch_attempts: ``MaxDispatchAttempts``, platform calls made for a queued request whose
        failures certainly created no session (connection refused, a 5xx answer) before it fails.
    """

    max_concurrent_sessions: int | None = None
    session_lease_seconds: int = 900
    pending_lease_seconds: int = 30
    sync_from_platform: bool = False
    sync_interval_seconds: float = 15.0
    max_dispatch_attempts: int = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSettings:
    """The waiting queue (``Queue``).

    :param max_length: ``MaxLength``, entries beyond which requests are refused instead of queued.
    :param ready_ttl_seconds: ``ReadyTtlSeconds``, how long a ready WebSocket URL is kept for a late
        ``Register`` (the platform's token expires 5 minutes after initiate).
    :param register_timeout_seconds: ``RegisterTimeoutSeconds``, time allowed between the 202 and ``Register``.
    :param disconnect_grace_seconds: ``DisconnectGraceSeconds``, how long a queued client may be gone
        from the hub (e.g. reconnecting) before its entry is dropped.
    """

    max_length: int = 10000
    ready_ttl_seconds: int = 300
    register_timeout_seconds: int = 60
    disconnect_grace_seconds: int = 45


@dataclass(frozen=True, slots=True, kw_only=True)
class SecuritySettings:
    """Rate limits and anonymizer blocking (``Security``). Every limit uses 0 for "unlimited".

    :param rate_limit_hourly: ``RateLimitHourly``, requests per client per sliding hour.
    :param rate_limit_daily: ``RateLimitDaily``, requests per client per sliding day.
    :param rate_limit_concurrency: ``RateLimitConcurrency``, live sessions per client.
    :param per_ip_rate_limit_hourly: ``PerIpRateLimitHourly``, requests per IP per sliding hour.
    :param per_ip_rate_limit_daily: ``PerIpRateLimitDaily``.
    :param per_ip_rate_limit_concurrency: ``PerIpRateLimitConcurrency``.
    :param webhook_api_token: ``WebhookApiToken``; empty means the webhook always answers 401.
    :param block_vpn: ``BlockVpn``.
    :param block_proxy: ``BlockProxy``.
    :param block_datacenter: ``BlockDatacenter``.
    :param block_tor: ``BlockTor``.
    :param ipv6_prefix_length: ``Ipv6PrefixLength``, the bits of an IPv6 address that per-IP limits count as
        one client (its /64 by default, so rotating addresses inside it does not escape them).
    """

    rate_limit_hourly: int = 0
    rate_limit_daily: int = 0
    rate_limit_concurrency: int = 0
    per_ip_rate_limit_hourly: int = 0
    per_ip_rate_limit_daily: int = 0
    per_ip_rate_limit_concurrency: int = 0
    webhook_api_token: str = ""
    block_vpn: bool = False
    block_proxy: bool = False
    block_datacenter: bool = False
    block_tor: bool = False
    ipv6_prefix_length: int = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardedHeadersSettings:
    """Which peers may set ``X-Forwarded-For`` (``ForwardedHeaders``).

    :param known_proxies: ``KnownProxies``, single addresses (normalised text form).
    :param known_networks: ``KnownNetworks``, CIDR networks (normalised, e.g. ``10.0.0.0/8``).
    """

    known_proxies: tuple[str, ...] = ()
    known_networks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GeoIpSettings:
    """Local MaxMind lookups that replace the original's ipapi.is calls (``GeoIp``).

    :param anonymous_ip_database: ``AnonymousIpDatabase``, path to a GeoIP2 Anonymous IP ``.mmdb``.
    :param asn_database: ``AsnDatabase``, path to a GeoLite2/GeoIP2 ASN ``.mmdb``.
    :param hosting_asns: ``HostingAsns``, autonomous systems treated as datacenters.
    :param allowed_networks: ``AllowedNetworks``, CIDRs never blocked (normalised).
    :param blocked_networks: ``BlockedNetworks``, CIDRs always blocked (normalised).
    """

    anonymous_ip_database: str | None = None
    asn_database: str | None = None
    hosting_asns: tuple[int, ...] = ()
    allowed_networks: tuple[str, ...] = ()
    blocked_networks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsSettings:
    """What one HTTP connection may cost the server (``Limits``). Counts use 0 for "unlimited".

    :param request_headers_timeout_seconds: ``RequestHeadersTimeoutSeconds``, time a new connection has to
        send its first request's whole head; a stalled (slowloris) connection is closed after it.
    :param keep_alive_timeout_seconds: ``KeepAliveTimeoutSeconds``, time a kept-alive connection has, after
        a response, to send the whole head of its next request.
    :param request_body_timeout_seconds: ``RequestBodyTimeoutSeconds``, time to receive a whole request body.
    :param max_connections: ``MaxConnections``, open connections this process accepts in total.
    :param max_connections_per_ip: ``MaxConnectionsPerIp``, open connections from one client address
        (an IPv6 client by its /64); the TCP peer counts, so behind a proxy raise it or set 0.
    """

    request_headers_timeout_seconds: float = 30.0
    keep_alive_timeout_seconds: float = 60.0
    request_body_timeout_seconds: float = 60.0
    max_connections: int = 10000
    max_connections_per_ip: int = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingSettings:
    """The log output (``Logging``). ASP.NET's ``LogLevel`` keys there are ignored: ``--log-level`` sets it.

    :param format: ``Format``, ``"text"`` (lines for people) or ``"json"`` (one object per line, for log
        collectors); ``--log-format`` on the command line wins over it.
    """

    format: str = "text"


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSettings:
    """The Prometheus endpoint ``/metrics`` (``Metrics``).

    :param port: ``Port``: serve ``/metrics`` on this port (same host) instead of the main one; ``None``
        keeps it on the main port.
    :param bearer_token: ``BearerToken``: when set, a scrape must send ``Authorization: Bearer <token>``.
    """

    port: int | None = None
    bearer_token: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSettings:
    """The admin API under ``/api/admin/`` and the dashboard's data (``Admin``).

    :param api_token: ``ApiToken``: the bearer token every admin call must send; empty (the default)
        disables the admin API, whose routes then answer 404.
    """

    api_token: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSettings:
    """This gateway among several behind one load balancer (``Instance``).

    :param id: ``Id``: a short name (``gw1``; letters, digits and ``-``) that starts every SignalR
        connection token this instance hands out (``gw1.<random>``), so the load balancer can send each
        hub request, by its ``id=``, to the instance that holds the connection. Empty (the default) for
        a single instance.
    """

    id: str = ""

    @property
    def token_prefix(self) -> str:
        """What this instance's connection ids and tokens start with (``"gw1."``; ``""`` when unset)."""
        return f"{self.id}." if self.id else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSettings:
    """How the gateway uses its Redis beyond where it is (``Redis``).

    :param wait_for_replicas: ``WaitForReplicas``: after each write that grants, queues, dispatches, records
        or ends a session, wait (Redis ``WAIT``) until this many replicas have it before acting on it; 0 (the
        default) does not wait. Narrows what a failover can lose (replication is asynchronous).
    :param wait_timeout_ms: ``WaitTimeoutMilliseconds`` (1 to 4000): the longest such a wait lasts; then the gateway
        carries on without the acknowledgement (and logs it), rather than stop serving while a replica lags.
    :param key_prefix: ``KeyPrefix``: the first part of every key and channel name the gateway uses
        (``iqra`` gives ``iqra:…``, and ``{iqra}:…`` on a Redis Cluster); deployments sharing one Redis or
        one cluster each need their own.
    """

    wait_for_replicas: int = 0
    wait_timeout_ms: int = 200
    key_prefix: str = "iqra"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the gateway is configured with.

    :param allowed_origins: ``AllowedOrigins``, CORS origins (``*`` allows any).
    :param forwarded_headers: ``ForwardedHeaders``.
    :param redis_url: from ``RedisConnectionString``, as a ``redis://``/``rediss://``/``unix://`` URL, or a
        ``redis+sentinel://`` one for a Redis behind Sentinel (:mod:`gateway.config.redis_sentinel`), or a
        ``redis+cluster://`` one for a Redis Cluster (:mod:`gateway.config.redis_cluster`); ``None`` selects the
        embedded store.
    :param redis: ``Redis``.
    :param platform: ``VoiceAiPlatform``.
    :param concurrency: ``Concurrency``.
    :param queue: ``Queue``.
    :param security: ``Security``.
    :param geoip: ``GeoIp``.
    :param limits: ``Limits``.
    :param logging: ``Logging``.
    :param metrics: ``Metrics``.
    :param admin: ``Admin``.
    :param instance: ``Instance``.
    """

    platform: PlatformSettings
    allowed_origins: tuple[str, ...] = ()
    forwarded_headers: ForwardedHeadersSettings = field(default_factory=ForwardedHeadersSettings)
    redis_url: str | None = None
    redis: RedisSettings = field(default_factory=RedisSettings)
    concurrency: ConcurrencySettings = field(default_factory=ConcurrencySettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    geoip: GeoIpSettings = field(default_factory=GeoIpSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    instance: InstanceSettings = field(default_factory=InstanceSettings)


def frozen_campaigns(campaigns: Mapping[str, CampaignSettings]) -> Mapping[str, CampaignSettings]:
    """A read-only copy of a campaign table, so a shared ``Settings`` cannot be changed through it.

    :param campaigns: campaigns keyed by public name.
    :return: a read-only mapping with the same items.
    """
    return MappingProxyType(dict(campaigns))
