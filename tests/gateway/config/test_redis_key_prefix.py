"""``Redis.KeyPrefix``: the first part of every key and channel name, so that deployments can share a Redis."""

from __future__ import annotations

import pytest

from gateway.admission.keys import KeySpace
from gateway.app import key_space
from gateway.config import load_settings
from gateway.config.errors import ConfigError
from tests.harness.settings import load, minimal


def test_the_default_prefix_keeps_the_names_of_existing_deployments() -> None:
    settings = load(minimal()).settings
    assert settings.redis.key_prefix == "iqra"
    assert key_space(settings) == KeySpace()


def test_a_prefix_names_every_key_and_on_a_cluster_is_the_hash_tag() -> None:
    settings = load({**minimal(), "Redis": {"KeyPrefix": "shop-eu"}}).settings
    keys = key_space(settings)
    assert keys.prefix == "shop-eu:" and keys.hash_tag is None
    assert keys.admission.queue.startswith("shop-eu:") and keys.rate_limits.startswith("shop-eu:")
    on_cluster = load({**minimal(), "RedisConnectionString": "127.0.0.1:7000,cluster=true",
                       "Redis": {"KeyPrefix": "shop-eu"}}).settings
    assert key_space(on_cluster).prefix == "{shop-eu}:" and key_space(on_cluster).hash_tag == "shop-eu"
    from_env = load_settings(data=minimal(), environ={"Redis__KeyPrefix": "shop.us"}).settings
    assert from_env.redis.key_prefix == "shop.us"


@pytest.mark.parametrize("value", ["", "has space", "{tagged}", "a:b", "x" * 33, "caf\u00e9", 12.5])
def test_a_prefix_that_cannot_name_keys_is_refused(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data={**minimal(), "Redis": {"KeyPrefix": value}}, environ={})
    assert any(p.startswith("Redis.KeyPrefix: must be") for p in caught.value.problems), caught.value.problems
