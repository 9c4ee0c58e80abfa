"""``RedisConnectionString`` naming a Redis Cluster: both spellings, one canonical URL, clear errors."""

from __future__ import annotations

import pytest

from gateway.config import parse_redis_connection_string
from gateway.config.errors import ConfigError
from gateway.config.redis_cluster import (
    ClusterTarget,
    is_cluster_url,
    parse_cluster_url,
)
from gateway.redis.client import redact_url
from tests.harness.settings import load, minimal


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("node1:7000,node2:7001,cluster=true", "redis+cluster://node1:7000,node2:7001/"),
        ("n1,n2:7001,cluster=True,password=p@ss", "redis+cluster://:p%40ss@n1:6379,n2:7001/"),
        ("n1,cluster=true,ssl=true,user=gw,password=pw,name=gateway",
         "rediss+cluster://gw:pw@n1:6379/?client_name=gateway"),
        ("[::1]:7000,cluster=true,defaultDatabase=0", "redis+cluster://[::1]:7000/"),
        ("redis+cluster://h1,h2:1", "redis+cluster://h1:6379,h2:1/"),
        ("redis+cluster://:pw@h1:7000/0?client_name=a%20b", "redis+cluster://:pw@h1:7000/?client_name=a%20b"),
        ("REDISS+CLUSTER://h/", "rediss+cluster://h:6379/"),
    ],
)
def test_both_spellings_become_one_cluster_url(value: str, url: str) -> None:
    assert parse_redis_connection_string(value) == url
    assert load({**minimal(), "RedisConnectionString": value}).settings.redis_url == url
    assert is_cluster_url(url)
    assert parse_cluster_url(url).url() == url  # the canonical form reads back as itself


def test_the_url_carries_every_part() -> None:
    target = parse_cluster_url("rediss+cluster://gw:p%3Aw@a:1,[::1]:2/?client_name=n")
    assert target == ClusterTarget(nodes=(("a", 1), ("::1", 2)), username="gw", password="p:w", ssl=True,
                                   client_name="n")
    assert target.where() == "cluster via a:1,[::1]:2"


def test_cluster_false_is_a_plain_redis() -> None:
    assert parse_redis_connection_string("a:7000,cluster=false") == "redis://a:7000/0"
    assert not is_cluster_url("redis://a:7000/0") and not is_cluster_url(None)


def test_passwords_are_kept_out_of_logs() -> None:
    assert redact_url("redis+cluster://gw:pw@a:1,b:2/?client_name=g") == "redis+cluster://gw:***@a:1,b:2/?client_name=g"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("redis+cluster://", "not a valid Redis Cluster URL (no node; write host:port"),
        ("redis+cluster://h:0", "node 'h:0' needs a port between 1 and 65535"),
        ("redis+cluster://h:x", "node 'h:x' must be host or host:port"),
        ("redis+cluster://h/3", "a cluster has only database 0; remove '/3'"),
        ("redis+cluster://h/?db=1", "unknown option(s) db; known: client_name"),
        ("h1,cluster=yes", "cluster='yes' must be true or false"),
        ("h1:99999,cluster=true", "node 'h1:99999' must be host or host:port with a port between 1 and 65535"),
        ("h1,cluster=true,defaultDatabase=2", "defaultDatabase=2 is not possible on a Redis Cluster"),
        ("h1,cluster=true,serviceName=m", "cluster=true and serviceName name two different deployments"),
        ("cluster=true", "no host"),
    ],
)
def test_bad_cluster_strings_are_refused_with_the_reason(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_connection_string(value)
    (text,) = caught.value.problems
    assert text.startswith("RedisConnectionString: ") and problem in text


def test_the_error_names_the_key_path_from_the_environment() -> None:
    with pytest.raises(ConfigError) as caught:
        load({**minimal()}, environ={"RedisConnectionString": "redis+cluster://h/5"})
    assert any(p.startswith("RedisConnectionString: not a valid Redis Cluster URL") for p in caught.value.problems)
