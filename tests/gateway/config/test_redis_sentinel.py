"""``RedisConnectionString`` naming a Redis behind Sentinel: both spellings, one canonical URL, clear errors; and
the ``Redis`` section (waiting for replicas)."""

from __future__ import annotations

import pytest

from gateway.config import load_settings, parse_redis_connection_string
from gateway.config.errors import ConfigError
from gateway.config.redis_sentinel import SentinelTarget, is_sentinel_url, parse_sentinel_url
from gateway.config.settings import RedisSettings
from gateway.redis.client import redact_url
from tests.harness.settings import load, minimal


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("sentinel1:26379,sentinel2:26379,serviceName=mymaster", "redis+sentinel://sentinel1:26379,sentinel2:26379/mymaster/0"),
        ("s1,s2:26380,serviceName=mymaster,password=p@ss,defaultDatabase=3",
         "redis+sentinel://:p%40ss@s1:26379,s2:26380/mymaster/3"),
        ("s1,serviceName=mymaster,ssl=true,user=gw,password=pw,sentinelPassword=sp,name=gateway",
         "rediss+sentinel://gw:pw@s1:26379/mymaster/0?sentinel_password=sp&client_name=gateway"),
        ("[::1]:5000,serviceName=cache", "redis+sentinel://[::1]:5000/cache/0"),
        ("redis+sentinel://h1,h2:1/mymaster", "redis+sentinel://h1:26379,h2:1/mymaster/0"),
        ("redis+sentinel://:pw@h1:26379/mymaster/2?sentinel_password=a%20b",
         "redis+sentinel://:pw@h1:26379/mymaster/2?sentinel_password=a%20b"),
        ("REDISS+SENTINEL://h/m", "rediss+sentinel://h:26379/m/0"),
    ],
)
def test_both_spellings_become_one_sentinel_url(value: str, url: str) -> None:
    assert parse_redis_connection_string(value) == url
    assert load({**minimal(), "RedisConnectionString": value}).settings.redis_url == url
    assert is_sentinel_url(url)
    assert parse_sentinel_url(url).url() == url  # the canonical form reads back as itself


def test_the_url_carries_every_part() -> None:
    target = parse_sentinel_url("rediss+sentinel://gw:p%3Aw@a:1,[::1]:2/my%20svc/4?sentinel_password=s&client_name=n")
    assert target == SentinelTarget(sentinels=(("a", 1), ("::1", 2)), service="my svc", username="gw",
                                    password="p:w", sentinel_password="s", db=4, ssl=True, client_name="n")
    assert "p:w" not in target.where() and "s" not in target.where().split("sentinels")[1]


def test_passwords_are_kept_out_of_logs() -> None:
    assert redact_url("redis+sentinel://:pw@a:1,b:2/m/0?sentinel_password=sp&client_name=g") == \
        "redis+sentinel://:***@a:1,b:2/m/0?sentinel_password=***&client_name=g"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("redis+sentinel://h1/", "no service name"),
        ("redis+sentinel:///mymaster", "no sentinel host"),
        ("redis+sentinel://h:0/m", "needs a port between 1 and 65535"),
        ("redis+sentinel://h/m/x", "database 'x' must be a whole number"),
        ("redis+sentinel://h/m?db=1", "unknown option(s) db"),
        ("s1,serviceName=", "serviceName must name the service"),
        ("s1:99999,serviceName=m", "sentinel 's1:99999' must be host or host:port"),
        ("s1,serviceName=m,defaultDatabase=x", "defaultDatabase='x' must be a whole number"),
        ("serviceName=m", "no host"),
    ],
)
def test_bad_sentinel_strings_are_refused_with_the_reason(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_connection_string(value)
    (text,) = caught.value.problems
    assert text.startswith("RedisConnectionString: ") and problem in text


def test_a_sentinel_password_without_sentinels_is_a_warning() -> None:
    loaded = load({**minimal(), "RedisConnectionString": "a:1,sentinelPassword=x"})
    assert loaded.settings.redis_url == "redis://a:1/0"
    assert loaded.warnings == ("RedisConnectionString: sentinelPassword ignored without serviceName (no sentinels are used)",)


def test_the_redis_section_sets_the_wait_for_replicas() -> None:
    assert load(minimal()).settings.redis == RedisSettings(wait_for_replicas=0, wait_timeout_ms=200)
    loaded = load({**minimal(), "Redis": {"WaitForReplicas": 1, "WaitTimeoutMilliseconds": 50}})
    assert loaded.settings.redis == RedisSettings(wait_for_replicas=1, wait_timeout_ms=50)
    from_env = load_settings(data=minimal(), environ={"Redis__WaitForReplicas": "2"}).settings
    assert from_env.redis.wait_for_replicas == 2


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"WaitForReplicas": -1}, "Redis.WaitForReplicas: must be between 0 and 16, got -1; 0 does not wait for replicas"),
        ({"WaitForReplicas": "one"}, "Redis.WaitForReplicas: must be a whole number between 0 and 16"),
        ({"WaitTimeoutMilliseconds": 0}, "Redis.WaitTimeoutMilliseconds: must be between 1 and 4000, got 0"),
        ({"WaitTimeoutMilliseconds": 5000}, "it must end before the 5 s command timeout"),
    ],
)
def test_bad_redis_section_values_are_refused(section: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data={**minimal(), "Redis": section}, environ={})
    assert any(problem in text for text in caught.value.problems), caught.value.problems


def test_an_unknown_redis_key_is_a_warning() -> None:
    loaded = load({**minimal(), "Redis": {"WaitForReplica": 1}})
    assert loaded.settings.redis.wait_for_replicas == 0
    assert any(w.startswith("Redis.WaitForReplica") for w in loaded.warnings), loaded.warnings
