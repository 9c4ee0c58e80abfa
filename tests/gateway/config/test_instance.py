"""``Instance.Id``: the name that starts every SignalR connection token, so a load balancer can route by it."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import load_settings
from gateway.config.errors import ConfigError
from tests.harness.settings import load, minimal


def with_instance(value: Any) -> dict[str, Any]:
    data = minimal()
    data["Instance"] = value
    return data


def test_no_instance_section_means_no_prefix() -> None:
    instance = load(minimal()).settings.instance
    assert (instance.id, instance.token_prefix) == ("", "")


@pytest.mark.parametrize("instance_id", ["gw1", "GW-eu-2", "7", "a" * 32])
def test_a_short_id_binds_and_prefixes_tokens(instance_id: str) -> None:
    instance = load(with_instance({"Id": instance_id})).settings.instance
    assert (instance.id, instance.token_prefix) == (instance_id, instance_id + ".")


def test_the_id_comes_from_the_environment_too() -> None:
    loaded = load(minimal(), {"Instance__Id": "gw3"})
    assert loaded.settings.instance.id == "gw3"
    assert loaded.warnings == ()


@pytest.mark.parametrize("value", ["", "gw.1", "gw 1", "gw_1", "a" * 33, "ü1", "gw1/"])
def test_an_id_a_balancer_cannot_match_is_a_clear_problem(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data=with_instance({"Id": value}), environ={})
    (problem,) = caught.value.problems
    assert problem.startswith(f"Instance.Id: must be 1 to 32 letters, digits or '-' (e.g. \"gw1\"), got {value!r}")
    assert "load balancer" in problem


def test_an_unknown_key_in_the_section_is_a_warning() -> None:
    loaded = load(with_instance({"Id": "gw1", "Name": "x"}))
    assert loaded.warnings == ("Instance.Name: unknown key, ignored",)


def test_the_section_must_be_an_object() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data=with_instance("gw1"), environ={})
    assert caught.value.problems[0].startswith("Instance: must be a JSON object")
