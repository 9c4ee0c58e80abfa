"""Loading appsettings.json + environment into Settings: the original's file, our keys, and every error path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_settings, parse_redis_connection_string
from gateway.config.errors import ConfigError
from gateway.config.settings import CampaignSettings
from tests.harness.settings import load, minimal

DATA = Path(__file__).parent / "data"
ORIGINAL = DATA / "appsettings.original.json"
FULL = DATA / "appsettings.full.json"


def problems_of(data: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_settings(data=data if data is not None else {}, environ=environ or {})
    return caught.value.problems


def with_(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (default :func:`minimal`) with the dotted ``path`` set (or removed for ``...``)."""
    data = copy.deepcopy(base if base is not None else minimal())
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return data


# ------------------------------------------------------------------------------ the original's file


@pytest.fixture
def anonymous_db_env(tmp_path: Path) -> dict[str, str]:
    """The one key the original's file lacks for its Block* flags: a MaxMind database (existence is checked)."""
    database = tmp_path / "anonymous-ip.mmdb"
    database.write_bytes(b"")
    return {"GeoIp__AnonymousIpDatabase": str(database)}


def test_original_example_file_needs_a_database_for_its_block_flags() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(ORIGINAL, environ={})
    paths = [p.split(":", 1)[0] for p in raised.value.problems]
    assert paths == ["Security.BlockVpn", "Security.BlockProxy"]
    assert all("GeoIp.AnonymousIpDatabase" in p for p in raised.value.problems)


def test_original_example_file_loads_unchanged(anonymous_db_env: dict[str, str]) -> None:
    loaded = load_settings(ORIGINAL, environ=anonymous_db_env)
    s = loaded.settings
    assert s.allowed_origins == ("https://widget-host.example", "http://localhost:5173")
    assert s.forwarded_headers.known_proxies == () and s.forwarded_headers.known_networks == ()
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.platform.api_secret_token == "iqra_sk_test_token"
    assert s.platform.base_url == "https://app.iqra.bot/api/v1/"
    assert dict(s.platform.campaigns) == {
        "IqraWebsiteCampaign": CampaignSettings(
            name="IqraWebsiteCampaign", business_id="4242", web_campaign_id="web-campaign-1", allowed_region_ids=("EU-DE", "OM-MCT")
        )
    }
    assert (s.security.rate_limit_hourly, s.security.rate_limit_daily, s.security.rate_limit_concurrency) == (3, 20, 1)
    assert s.security.webhook_api_token == "webhook-secret"
    assert (s.security.block_vpn, s.security.block_proxy, s.security.block_datacenter, s.security.block_tor) == (True, True, False, False)
    # No cap in an existing file: the cap comes from the platform, as the original did.
    assert s.concurrency.max_concurrent_sessions is None and s.concurrency.sync_from_platform is True
    assert s.concurrency.session_lease_seconds == 900 and s.concurrency.pending_lease_seconds == 30
    assert (s.queue.max_length, s.queue.ready_ttl_seconds, s.queue.register_timeout_seconds, s.queue.disconnect_grace_seconds) == (
        10000, 300, 60, 45,
    )


def test_original_example_file_warns_about_ipapi(anonymous_db_env: dict[str, str]) -> None:
    warnings = load_settings(ORIGINAL, environ=anonymous_db_env).warnings
    paths = [w.split(":", 1)[0] for w in warnings]
    for path in ("IpApi", "Security.EnableIpApiCheck", "Security.EnableIpApiCache", "Security.IpApiCacheDurationDays"):
        assert path in paths
        assert "GeoIp.AnonymousIpDatabase" in warnings[paths.index(path)]
    assert not any(p.startswith(("Logging", "AllowedHosts", "Security.Block")) for p in paths)


def test_full_file_sets_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "anonymous-ip.mmdb").write_bytes(b"")
    (tmp_path / "asn.mmdb").write_bytes(b"")
    loaded = load_settings(FULL, environ={})
    s = loaded.settings
    assert loaded.warnings == ()
    assert s.allowed_origins == ("https://widget-host.example", "*")
    assert s.forwarded_headers.known_proxies == ("172.19.0.1", "::1")
    assert s.forwarded_headers.known_networks == ("10.0.0.0/8", "2001:db8::/32")
    assert s.redis_url == "rediss://:s3cret@redis.internal:6380/2"
    p = s.platform
    assert (p.api_secret_token, p.base_url, p.connect_timeout_seconds, p.request_timeout_seconds) == (
        "iqra_sk_full", "https://platform.example/api/v1/", 3.5, 10.0,
    )
    assert p.campaigns["Sales"] == CampaignSettings(
        name="Sales", business_id="1001", web_campaign_id="web-sales", allowed_region_ids=("EU-DE", "us-east-1"), max_concurrent_sessions=5
    )
    assert p.campaigns["Support"].max_concurrent_sessions is None
    c = s.concurrency
    assert (c.max_concurrent_sessions, c.session_lease_seconds, c.pending_lease_seconds, c.sync_from_platform, c.sync_interval_seconds) == (
        20, 1800, 45, True, 30.0,
    )
    q = s.queue
    assert (q.max_length, q.ready_ttl_seconds, q.register_timeout_seconds, q.disconnect_grace_seconds) == (500, 240, 90, 20)
    sec = s.security
    assert (sec.rate_limit_hourly, sec.rate_limit_daily, sec.rate_limit_concurrency) == (10, 50, 2)
    assert (sec.per_ip_rate_limit_hourly, sec.per_ip_rate_limit_daily, sec.per_ip_rate_limit_concurrency) == (30, 200, 4)
    assert (sec.block_vpn, sec.block_proxy, sec.block_datacenter, sec.block_tor) == (True, True, True, True)
    g = s.geoip
    assert (g.anonymous_ip_database, g.asn_database) == ("anonymous-ip.mmdb", "asn.mmdb")
    assert g.hosting_asns == (16509, 15169)
    assert g.allowed_networks == ("192.0.2.0/24",)
    assert g.blocked_networks == ("198.51.100.0/24", "203.0.113.7/32")


def test_keys_match_case_insensitively() -> None:
    data = {
        "voiceaiplatform": {
            "APISECRETTOKEN": "tok",
            "campaigns": {"Web": {"businessid": "1", "WEBCAMPAIGNID": "w", "allowedRegionIDs": ["EU-DE"]}},
        },
        "SECURITY": {"webhookapitoken": "hook", "ratelimithourly": 7},
        "concurrency": {"maxconcurrentsessions": 3},
    }
    loaded = load(data)
    assert loaded.warnings == ()
    assert loaded.settings.security.rate_limit_hourly == 7
    assert loaded.settings.concurrency.max_concurrent_sessions == 3
    assert loaded.settings.platform.campaigns["Web"].allowed_region_ids == ("EU-DE",)


def test_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.json", environ={})
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "AllowedOrigins": [\n    "a" "b"\n  ]\n}\n')
    with pytest.raises(ConfigError, match="line 3"):
        load_settings(broken, environ={})
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="one JSON object"):
        load_settings(listed, environ={})


def test_comments_inside_strings_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    data = minimal()
    data["VoiceAiPlatform"]["ApiSecretToken"] = "a//b/*c*/,]"
    path.write_text(json.dumps(data))
    assert load_settings(path, environ={}).settings.platform.api_secret_token == "a//b/*c*/,]"


def test_keys_given_twice_in_different_casing_are_an_error() -> None:
    data = minimal()
    data["Security"]["webhookapitoken"] = "other"
    (problem,) = problems_of(data)
    assert problem.startswith("Security.webhookapitoken: given twice")


# ------------------------------------------------------------------------------ environment overrides


def test_environment_overrides_scalars_arrays_and_nested_campaign_keys(anonymous_db_env: dict[str, str]) -> None:
    base = with_("AllowedOrigins", ["https://a.example", "https://b.example"])
    environ = {
        **anonymous_db_env,
        "VoiceAiPlatform__ApiSecretToken": "from-env",
        "AllowedOrigins__0": "https://override.example",
        "AllowedOrigins__2": "https://added.example",
        "VoiceAiPlatform__Campaigns__Web__AllowedRegionIds__1": "OM-MCT",
        "voiceaiplatform__campaigns__web__maxconcurrentsessions": "4",
        "VoiceAiPlatform__Campaigns__Second__BusinessId": "2",
        "VoiceAiPlatform__Campaigns__Second__WebCampaignId": "w2",
        "VoiceAiPlatform__Campaigns__Second__AllowedRegionIds__0": "EU-DE",
        "Security__RateLimitDaily": "12",
        "Security__BlockVpn": "TRUE",
        "Concurrency__SyncFromPlatform": "false",
        "Concurrency__MaxConcurrentSessions": "8",
        "VoiceAiPlatform__RequestTimeoutSeconds": "7.5",
        "RedisConnectionString": "redis://cache:6379/1",
        "PATH": "/usr/bin",
        "Unrelated__Key": "x",
        "Logging__LogLevel__Default": "Debug",
    }
    loaded = load(base, environ)
    assert loaded.warnings == ()  # nothing about PATH, Unrelated__Key or Logging
    s = loaded.settings
    assert type(s.platform.api_secret_token) is str
    assert s.platform.api_secret_token == "from-env"
    assert s.allowed_origins == ("https://override.example", "https://b.example", "https://added.example")
    web = s.platform.campaigns["Web"]
    assert web.allowed_region_ids == ("EU-DE", "OM-MCT") and web.max_concurrent_sessions == 4
    assert s.platform.campaigns["Second"] == CampaignSettings(name="Second", business_id="2", web_campaign_id="w2", allowed_region_ids=("EU-DE",))
    assert s.security.rate_limit_daily == 12 and s.security.block_vpn is True
    assert s.concurrency.sync_from_platform is False and s.concurrency.max_concurrent_sessions == 8
    assert s.platform.request_timeout_seconds == 7.5
    assert s.redis_url == "redis://cache:6379/1"


def test_environment_alone_is_a_complete_configuration() -> None:
    environ = {
        "VoiceAiPlatform__ApiSecretToken": "t",
        "VoiceAiPlatform__Campaigns__C__BusinessId": "1",
        "VoiceAiPlatform__Campaigns__C__WebCampaignId": "w",
        "VoiceAiPlatform__Campaigns__C__AllowedRegionIds__0": "EU-DE",
        "Security__WebhookApiToken": "h",
    }
    loaded = load_settings(environ=environ)
    assert loaded.settings.platform.campaigns["C"].allowed_region_ids == ("EU-DE",)
    assert loaded.warnings == ()


def test_environment_value_on_a_section_is_ignored_with_a_warning() -> None:
    loaded = load(minimal(), {"VoiceAiPlatform": "oops", "Security:RateLimitHourly": "4"})
    assert loaded.settings.platform.api_secret_token == "tok"
    assert loaded.settings.security.rate_limit_hourly == 4  # ":" works as a separator too, as in ASP.NET
    assert loaded.warnings == ("VoiceAiPlatform: sets a value on the section 'VoiceAiPlatform', which has keys of its own; ignored",)


def test_numbers_written_as_strings_bind_as_in_aspnet(anonymous_db_env: dict[str, str]) -> None:
    s = load(with_("Security", {"WebhookApiToken": "h", "RateLimitHourly": "5", "BlockVpn": "true"}), anonymous_db_env).settings
    assert (s.security.rate_limit_hourly, s.security.block_vpn) == (5, True)


def test_environment_type_errors_name_the_key_and_the_variable() -> None:
    problems = problems_of(minimal(), {"Security__RateLimitHourly": "lots", "Queue__MaxLength": "-3"})
    assert problems == (
        "Queue.MaxLength: must be >= 1, got -3 (from environment variable Queue__MaxLength)",
        "Security.RateLimitHourly: must be a whole number >= 0, got 'lots'; use 0 for unlimited "
        "(from environment variable Security__RateLimitHourly)",
    )


# ------------------------------------------------------------------------------ error paths


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("VoiceAiPlatform", ..., "VoiceAiPlatform: missing"),
        ("VoiceAiPlatform.ApiSecretToken", ..., "VoiceAiPlatform.ApiSecretToken: missing"),
        ("VoiceAiPlatform.ApiSecretToken", " ", "VoiceAiPlatform.ApiSecretToken: is empty"),
        ("VoiceAiPlatform.ApiSecretToken", True, "VoiceAiPlatform.ApiSecretToken: must be a string"),
        ("VoiceAiPlatform.BaseUrl", "ftp://x/", "VoiceAiPlatform.BaseUrl: 'ftp://x/' is not an http(s) URL"),
        ("VoiceAiPlatform.Campaigns", ..., "VoiceAiPlatform.Campaigns: missing; add at least one campaign"),
        ("VoiceAiPlatform.Campaigns", {}, "VoiceAiPlatform.Campaigns: is empty; add at least one campaign"),
        ("VoiceAiPlatform.Campaigns", ["Web"], "VoiceAiPlatform.Campaigns: must be a JSON object"),
        ("VoiceAiPlatform.Campaigns.Web.BusinessId", ..., "VoiceAiPlatform.Campaigns.Web.BusinessId: missing"),
        ("VoiceAiPlatform.Campaigns.Web.WebCampaignId", "", "VoiceAiPlatform.Campaigns.Web.WebCampaignId: is empty"),
        ("VoiceAiPlatform.Campaigns.Web.AllowedRegionIds", "EU-DE", "VoiceAiPlatform.Campaigns.Web.AllowedRegionIds: must be a JSON list"),
        ("VoiceAiPlatform.Campaigns.Web.AllowedRegionIds", ["EU-DE", 5.5], "VoiceAiPlatform.Campaigns.Web.AllowedRegionIds[1]: must be a string"),
        ("VoiceAiPlatform.Campaigns.Web.MaxConcurrentSessions", -1, "VoiceAiPlatform.Campaigns.Web.MaxConcurrentSessions: must be >= 0, got -1"),
        ("VoiceAiPlatform.Campaigns.Other", "x", "VoiceAiPlatform.Campaigns.Other: must be a JSON object"),
        ("VoiceAiPlatform.ConnectTimeoutSeconds", 0, "VoiceAiPlatform.ConnectTimeoutSeconds: must be a number of seconds greater than 0"),
        ("AllowedOrigins", "https://a.example", "AllowedOrigins: must be a JSON list"),
        ("AllowedOrigins", {"first": "https://a.example"}, "AllowedOrigins: must be a JSON list, but has the named key 'first'"),
        ("AllowedOrigins", ["example.com"], "AllowedOrigins[0]: 'example.com' is not an origin"),
        ("ForwardedHeaders.KnownProxies", ["172.19.0.300"], "ForwardedHeaders.KnownProxies[0]: '172.19.0.300' is not an IP address"),
        ("ForwardedHeaders.KnownNetworks", ["10.0.0.0/33"], "ForwardedHeaders.KnownNetworks[0]: '10.0.0.0/33' is not a network"),
        ("ForwardedHeaders", [], "ForwardedHeaders: must be a JSON object"),
        ("GeoIp.AllowedNetworks", ["nonsense"], "GeoIp.AllowedNetworks[0]: 'nonsense' is not a network"),
        ("GeoIp.BlockedNetworks", ["1.2.3.4/40"], "GeoIp.BlockedNetworks[0]: '1.2.3.4/40' is not a network"),
        ("GeoIp.HostingAsns", [0], "GeoIp.HostingAsns[0]: must be between 1 and 4294967295, got 0"),
        ("GeoIp.HostingAsns", ["ASX"], "GeoIp.HostingAsns[0]: must be a whole number between 1 and 4294967295"),
        ("GeoIp.AnonymousIpDatabase", "/nonexistent/anon.mmdb", "GeoIp.AnonymousIpDatabase: file '/nonexistent/anon.mmdb' not found"),
        ("Security.RateLimitHourly", -1, "Security.RateLimitHourly: must be >= 0, got -1; use 0 for unlimited"),
        ("Security.RateLimitDaily", True, "Security.RateLimitDaily: must be a whole number >= 0, got true"),
        ("Security.PerIpRateLimitConcurrency", 1.5, "Security.PerIpRateLimitConcurrency: must be a whole number >= 0, got 1.5"),
        ("Security.PerIpRateLimitDaily", 2.0, "Security.PerIpRateLimitDaily: must be a whole number >= 0, got 2.0"),
        ("Security.BlockVpn", "yes", "Security.BlockVpn: must be true or false, got 'yes'"),
        ("Security.Ipv6PrefixLength", 0, "Security.Ipv6PrefixLength: must be between 1 and 128, got 0"),
        ("Security.Ipv6PrefixLength", 129, "Security.Ipv6PrefixLength: must be between 1 and 128, got 129"),
        ("Security.WebhookApiToken", 3.0, "Security.WebhookApiToken: must be a string"),
        ("Concurrency.MaxConcurrentSessions", -5, "Concurrency.MaxConcurrentSessions: must be >= 0, got -5"),
        ("Concurrency.SessionLeaseSeconds", 0, "Concurrency.SessionLeaseSeconds: must be >= 1, got 0"),
        ("Concurrency.SyncFromPlatform", 1, "Concurrency.SyncFromPlatform: must be true or false, got 1"),
        ("Concurrency.SyncIntervalSeconds", "soon", "Concurrency.SyncIntervalSeconds: must be a number of seconds greater than 0"),
        ("Queue.MaxLength", 0, "Queue.MaxLength: must be >= 1, got 0"),
        ("Queue.DisconnectGraceSeconds", -1, "Queue.DisconnectGraceSeconds: must be >= 0, got -1"),
        ("Queue", 5, "Queue: must be a JSON object"),
        ("RedisConnectionString", "http://x", "RedisConnectionString: unsupported scheme 'http'"),
        ("RedisConnectionString", 6379, None),
    ],
)
def test_each_error_names_its_key_path(path: str, value: Any, expected: str | None) -> None:
    if expected is None:
        # A number is text to ASP.NET: 6379 alone is a host called "6379"; accepted as such.
        assert load(with_(path, value)).settings.redis_url == "redis://6379:6379/0"
        return
    problems = problems_of(with_(path, value))
    assert any(p.startswith(expected) for p in problems), problems


def test_all_problems_are_collected_at_once() -> None:
    data = minimal()
    data["VoiceAiPlatform"]["Campaigns"]["Web"].pop("BusinessId")
    data["Security"]["RateLimitHourly"] = -1
    data["ForwardedHeaders"] = {"KnownProxies": ["bad"], "KnownNetworks": ["also/bad"]}
    data["Queue"] = {"ReadyTtlSeconds": "x"}
    problems = problems_of(data)
    assert [p.split(":", 1)[0] for p in problems] == [
        "ForwardedHeaders.KnownProxies[0]",
        "ForwardedHeaders.KnownNetworks[0]",
        "VoiceAiPlatform.Campaigns.Web.BusinessId",
        "Queue.ReadyTtlSeconds",
        "Security.RateLimitHourly",
    ]
    with pytest.raises(ConfigError) as caught:
        load(data)
    assert str(caught.value).startswith("5 configuration problems:")


# ------------------------------------------------------------------------------ the cap and the leases


def test_no_cap_means_sync_from_platform() -> None:
    c = load(minimal()).settings.concurrency
    assert c.max_concurrent_sessions is None and c.sync_from_platform is True


def test_a_cap_turns_sync_off_unless_asked_for() -> None:
    c = load(with_("Concurrency", {"MaxConcurrentSessions": 10})).settings.concurrency
    assert (c.max_concurrent_sessions, c.sync_from_platform) == (10, False)
    c = load(with_("Concurrency", {"MaxConcurrentSessions": 10, "SyncFromPlatform": True})).settings.concurrency
    assert (c.max_concurrent_sessions, c.sync_from_platform) == (10, True)


def test_neither_cap_nor_sync_is_a_startup_error_that_says_how_to_fix_it() -> None:
    (problem,) = problems_of(with_("Concurrency", {"SyncFromPlatform": False}))
    assert problem.startswith("Concurrency: no session cap")
    assert "Concurrency.MaxConcurrentSessions" in problem and "Concurrency.SyncFromPlatform to true" in problem


def test_pending_lease_must_sit_between_request_timeout_and_session_lease() -> None:
    (problem,) = problems_of(with_("Concurrency", {"PendingLeaseSeconds": 60, "SessionLeaseSeconds": 60}))
    assert problem.startswith("Concurrency.PendingLeaseSeconds: (60) must be shorter than Concurrency.SessionLeaseSeconds (60)")
    (problem,) = problems_of(with_("Concurrency", {"PendingLeaseSeconds": 15}))
    assert problem.startswith("Concurrency.PendingLeaseSeconds: (15) must be longer than VoiceAiPlatform.RequestTimeoutSeconds (15)")
    data = with_("VoiceAiPlatform.RequestTimeoutSeconds", 5)
    assert load(with_("Concurrency", {"PendingLeaseSeconds": 6, "SessionLeaseSeconds": 7}, data)).settings.concurrency.pending_lease_seconds == 6


# ------------------------------------------------------------------------------ warnings and normalisation


def test_unknown_keys_are_warnings_naming_the_path() -> None:
    data = with_("Extra", 1)
    data["VoiceAiPlatform"]["Campaigns"]["Web"]["Colour"] = "blue"
    data["Queue"] = {"MaxLenght": 5}
    warnings = load(data).warnings
    assert warnings == (
        "VoiceAiPlatform.Campaigns.Web.Colour: unknown key, ignored",
        "Queue.MaxLenght: unknown key, ignored; did you mean MaxLength?",
        "Extra: unknown key, ignored",
    )


def test_empty_webhook_token_is_allowed_with_a_warning() -> None:
    loaded = load(with_("Security", {}))
    assert loaded.settings.security.webhook_api_token == ""
    (warning,) = loaded.warnings
    assert warning.startswith("Security.WebhookApiToken: is empty: the session-ended webhook will answer 401")


def test_other_warnings() -> None:
    data = with_("Queue", {"ReadyTtlSeconds": 600})
    data["VoiceAiPlatform"]["Campaigns"]["Web"]["AllowedRegionIds"] = []
    data["VoiceAiPlatform"]["Campaigns"]["Web"]["BusinessId"] = "biz"
    warnings = load(data).warnings
    assert [w.split(":", 1)[0] for w in warnings] == [
        "VoiceAiPlatform.Campaigns.Web.AllowedRegionIds",
        "VoiceAiPlatform.Campaigns.Web.BusinessId",
        "Queue.ReadyTtlSeconds",
    ]


def test_normalisation() -> None:
    data = with_("VoiceAiPlatform.BaseUrl", "http://localhost:5000/api/v1")
    data["AllowedOrigins"] = ["HTTPS://Widget.Example/", "*"]
    data["ForwardedHeaders"] = {"KnownProxies": ["::FFFF:1.2.3.4"], "KnownNetworks": ["172.19.0.1/16", "10.1.2.3"]}
    data["VoiceAiPlatform"]["Campaigns"]["Web"]["BusinessId"] = 12345
    s = load(data).settings
    assert s.platform.base_url == "http://localhost:5000/api/v1/"
    assert s.allowed_origins == ("https://widget.example", "*")
    assert s.forwarded_headers.known_proxies == ("::ffff:102:304",)
    assert s.forwarded_headers.known_networks == ("172.19.0.0/16", "10.1.2.3/32")
    assert s.platform.campaigns["Web"].business_id == "12345"


def test_settings_are_immutable() -> None:
    s = load(minimal()).settings
    with pytest.raises(AttributeError):
        s.redis_url = "redis://x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.platform.campaigns["New"] = s.platform.campaigns["Web"]  # type: ignore[index]


# ------------------------------------------------------------------------------ redis connection strings


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("localhost:6379", "redis://localhost:6379/0"),
        ("redis", "redis://redis:6379/0"),
        ("redis:6380,defaultDatabase=3", "redis://redis:6380/3"),
        ("cache.example:6380,password=p@ss:w/rd,ssl=true", "rediss://:p%40ss%3Aw%2Frd@cache.example:6380/0"),
        ("cache:6379,user=app,password=pw,ssl=False,name=gateway", "redis://app:pw@cache:6379/0?client_name=gateway"),
        ("[::1]:6379", "redis://[::1]:6379/0"),
        ("redis://user:pw@cache:6379/2", "redis://user:pw@cache:6379/2"),
        ("rediss://cache:6380", "rediss://cache:6380"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    ],
)
def test_redis_connection_strings(value: str, url: str) -> None:
    assert parse_redis_connection_string(value) == url


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "no host"),
        ("password=x", "no host"),
        ("host:99999", "endpoint 'host:99999' must be host or host:port"),
        ("host:6379,defaultDatabase=two", "defaultDatabase='two' must be a whole number"),
        ("host:6379,ssl=maybe", "ssl='maybe' must be true or false"),
        ("http://host", "unsupported scheme 'http'"),
        ("redis://host:notaport", "not a valid Redis URL"),
    ],
)
def test_bad_redis_connection_strings(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_connection_string(value)
    (text,) = caught.value.problems
    assert text.startswith("RedisConnectionString: ") and problem in text


def test_redis_unknown_options_and_extra_endpoints_are_warnings() -> None:
    loaded = load(with_("RedisConnectionString", "a:1,b:2,abortConnect=false,connectTimeout=5000"))
    assert loaded.settings.redis_url == "redis://a:1/0"
    assert loaded.warnings == (
        "RedisConnectionString: option abortconnect='false' ignored (a StackExchange.Redis option the gateway does not use)",
        "RedisConnectionString: option connecttimeout='5000' ignored (a StackExchange.Redis option the gateway does not use)",
        "RedisConnectionString: several endpoints given; only the first (a:1) is used",
    )


@pytest.mark.parametrize("value", ["", "   ", None])
def test_empty_or_absent_redis_means_embedded(value: str | None) -> None:
    assert load(with_("RedisConnectionString", value)).settings.redis_url is None
    assert load(with_("RedisConnectionString", ...)).settings.redis_url is None


def test_ipv6_prefix_length_defaults_to_one_customer_subnet() -> None:
    assert load(minimal()).settings.security.ipv6_prefix_length == 64
    assert load(with_("Security.Ipv6PrefixLength", 56)).settings.security.ipv6_prefix_length == 56
