"""``Concurrency.MaxDispatchAttempts``: platform calls for a queued request whose failures created no session."""

from __future__ import annotations

import pytest

from gateway.config.errors import ConfigError
from tests.harness.settings import load, minimal


def with_attempts(value) -> dict:
    data = minimal()
    data["Concurrency"] = {"MaxConcurrentSessions": 2, "MaxDispatchAttempts": value}
    return data


def test_three_calls_by_default() -> None:
    data = minimal()
    data["Concurrency"] = {"MaxConcurrentSessions": 2}
    assert load(data).settings.concurrency.max_dispatch_attempts == 3


@pytest.mark.parametrize("value", [1, 5, 10, "4"])
def test_a_setting_within_bounds_is_taken(value) -> None:
    assert load(with_attempts(value)).settings.concurrency.max_dispatch_attempts == int(value)


@pytest.mark.parametrize("value", [0, 11, -1, "many", 2.5, True])
def test_a_setting_out_of_bounds_names_the_key_and_the_bounds(value) -> None:
    with pytest.raises(ConfigError) as caught:
        load(with_attempts(value))
    (problem,) = caught.value.problems
    assert problem.startswith("Concurrency.MaxDispatchAttempts")
    assert "between 1 and 10" in problem
