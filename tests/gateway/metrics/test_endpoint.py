"""Who may scrape, and where: ``Metrics.BearerToken`` (401 JSON without it, constant-time comparison),
``Metrics.Port`` (``/metrics`` alone on a port of its own, then not on the main one), the exposition
format a scraper asks for, and the ``Metrics`` section's validation."""

from __future__ import annotations

import pytest
import ujson
from tornado.httpclient import AsyncHTTPClient

from gateway.config import ConfigError, load_settings
from gateway.http.bearer import bearer_matches
from gateway.metrics.endpoint import TOKEN_MESSAGE
from tests.harness.metrics import Scrape, scrape
from tests.harness.redis_process import free_port
from tests.harness.stack import base_config, body_of

TOKEN = "s3cret-scrape-token"


async def test_a_bearer_token_guards_the_scrape(stack_factory) -> None:
    stack = await stack_factory(config=base_config(Metrics={"BearerToken": TOKEN}))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        response = await stack.call("GET", "/metrics", headers=headers)
        assert (response.code, body_of(response)) == (401, {"message": TOKEN_MESSAGE}), headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    response = await stack.call("GET", "/metrics", headers={"Authorization": f"bearer {TOKEN}"})  # any case
    assert response.code == 200
    assert Scrape(response.body.decode()).value("iqra_gateway_store_up") == 1


def test_the_token_comparison_takes_only_a_bearer_token() -> None:
    assert bearer_matches(f"Bearer {TOKEN}", TOKEN)
    assert bearer_matches(f"  BEARER   {TOKEN} ", TOKEN)
    assert not bearer_matches(TOKEN, TOKEN)
    assert not bearer_matches("Bearer", TOKEN)
    assert not bearer_matches("Bearer \u00e9t\u00e9", TOKEN)  # text that is not the token, whatever it holds


async def test_metrics_on_a_port_of_their_own_and_not_on_the_main_one(stack_factory) -> None:
    port = free_port()
    stack = await stack_factory(config=base_config(Metrics={"Port": port}))
    assert stack.gateway.metrics_endpoint.port == port
    main = await stack.call("GET", "/metrics")
    assert (main.code, body_of(main)) == (404, {"message": "Not found."})
    http = AsyncHTTPClient(force_instance=True)
    try:
        scraped = await scrape(http, f"http://127.0.0.1:{port}/metrics")
        assert scraped.value("iqra_gateway_session_cap", source="config") == 2
        other = await http.fetch(f"http://127.0.0.1:{port}/api/session/request", raise_error=False)
        assert (other.code, ujson.loads(other.body)) == (404, {"message": "Not found."})
    finally:
        http.close()


async def test_a_scraper_that_asks_for_openmetrics_gets_it(stack_factory) -> None:
    stack = await stack_factory()
    response = await stack.call("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.body.endswith(b"# EOF\n")
    plain = await stack.call("GET", "/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(("section", "problem"), [
    ({"Port": 0}, "Metrics.Port: must be between 1 and 65535, got 0"),
    ({"Port": "nine"}, "Metrics.Port: must be a whole number between 1 and 65535"),
    ({"BearerToken": " padded "}, "Metrics.BearerToken: must not start or end with spaces"),
    ({"BearerToken": 5.5}, "Metrics.BearerToken: must be a string"),
])
def test_a_wrong_metrics_setting_is_refused_with_its_path(section, problem) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data=base_config(Metrics=section), environ={})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_metrics_settings_bind_from_the_file_and_the_environment() -> None:
    assert load_settings(data=base_config(), environ={}).settings.metrics.port is None
    loaded = load_settings(data=base_config(Metrics={"Port": "9102", "Scrape": 1}),
                           environ={"Metrics__BearerToken": TOKEN})
    assert (loaded.settings.metrics.port, loaded.settings.metrics.bearer_token) == (9102, TOKEN)
    assert any(warning.startswith("Metrics.Scrape") for warning in loaded.warnings), loaded.warnings
