"""A misspelt key names the key it probably meant; the Logging section binds Format and ignores LogLevel;
a configuration that cannot be used still reports its warnings beside its problems."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.config import load_settings
from gateway.config.errors import ConfigError
from tests.harness.settings import load, minimal


def _with(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


@pytest.mark.parametrize(("misspelt", "meant"), [
    ("Concurrency.MaxConcurentSessions", "MaxConcurrentSessions"),
    ("Queue.MaxLenght", "MaxLength"),
    ("Security.RateLimitHoury", "RateLimitHourly"),
    ("Security.WebhookToken", "WebhookApiToken"),
    ("Limits.MaxConnectionPerIp", "MaxConnectionsPerIp"),
    ("ForwardedHeaders.KnownProxy", "KnownProxies"),
    ("GeoIp.HostingAsn", "HostingAsns"),
    ("VoiceAiPlatform.RequestTimeoutSecs", "RequestTimeoutSeconds"),
    ("VoiceAiPlatform.Campaigns.Web.AllowedRegionId", "AllowedRegionIds"),
    ("Logging.Formatt", "Format"),
    ("AllowedOrigin", "AllowedOrigins"),
    ("redisconnectionstrng", "RedisConnectionString"),  # keys are case-insensitive, so are the hints
])
def test_a_misspelt_key_says_which_known_key_of_its_section_it_probably_meant(misspelt: str, meant: str) -> None:
    base = minimal()
    base["Concurrency"] = {"MaxConcurrentSessions": 2}
    warnings = load(_with(base, misspelt, 1)).warnings
    assert f"{misspelt}: unknown key, ignored; did you mean {meant}?" in warnings


def test_a_key_like_none_of_its_section_gets_no_guess() -> None:
    data = _with(_with(minimal(), "Queue.Colour", "blue"), "Shop", 1)
    assert load(data).warnings == ("Queue.Colour: unknown key, ignored", "Shop: unknown key, ignored")


def test_the_hint_names_a_key_of_the_same_section_only() -> None:
    # MaxLength is a Queue key: in Concurrency the nearest known key is not it.
    warnings = load(_with(minimal(), "Concurrency.MaxLenght", 1)).warnings
    assert "Concurrency.MaxLenght: unknown key, ignored" in warnings


def test_logging_format_binds_and_the_originals_log_levels_are_ignored_silently() -> None:
    assert load(minimal()).settings.logging.format == "text"
    data = _with(minimal(), "Logging", {"LogLevel": {"Default": "Information", "Microsoft.AspNetCore": "Warning"},
                                        "Format": "JSON"})
    loaded = load(data)
    assert loaded.settings.logging.format == "json"
    assert loaded.warnings == ()
    from_env = load(minimal(), environ={"Logging__Format": "json"})
    assert from_env.settings.logging.format == "json"


def test_a_wrong_logging_format_is_a_problem_naming_the_choices() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(data=_with(minimal(), "Logging.Format", "xml"), environ={})
    assert raised.value.problems == ('Logging.Format: must be "text" or "json", got \'xml\'',)


def test_a_configuration_with_problems_still_reports_its_warnings() -> None:
    # The typo is why the cap is "missing": the operator needs both lines to see it.
    data = _with(minimal(), "Concurrency", {"MaxConcurentSessions": 2, "SyncFromPlatform": False})
    with pytest.raises(ConfigError) as raised:
        load_settings(data=data, environ={})
    (problem,) = raised.value.problems
    assert problem.startswith("Concurrency: no session cap")
    assert raised.value.warnings == (
        "Concurrency.MaxConcurentSessions: unknown key, ignored; did you mean MaxConcurrentSessions?",)
