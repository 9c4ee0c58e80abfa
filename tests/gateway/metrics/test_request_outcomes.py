"""Refusals decided before a session request reaches the service (the content type, the body size) are
counted by their status, and so is a bug's 500: every answered request is counted once."""

from __future__ import annotations

from tornado.httpclient import AsyncHTTPClient

from tests.harness.metrics import scrape
from tests.harness.stack import session_body


async def test_edge_refusals_and_a_bug_are_counted(stack_factory, caplog) -> None:
    stack = await stack_factory()
    assert (await stack.request_session(headers={"Content-Type": "text/plain"})).code == 415
    too_big = session_body(metadata={f"k{i}": "x" * 4000 for i in range(20)})
    assert (await stack.request_session(too_big)).code == 413

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    stack.gateway.service.request_session = broken  # type: ignore[method-assign]
    assert (await stack.request_session()).code == 500
    http = AsyncHTTPClient(force_instance=True)
    try:
        scraped = await scrape(http, stack.base_url + "/metrics")
    finally:
        http.close()
    assert scraped.value("iqra_gateway_session_requests_total", outcome="invalid", reason="") == 2
    assert scraped.value("iqra_gateway_session_requests_total", outcome="error", reason="") == 1
    assert scraped.value("iqra_gateway_session_request_duration_seconds_count", outcome="error") == 1
    total = sum(value for (name, _), value in scraped.samples.items() if name == "iqra_gateway_session_requests_total")
    assert total == 3
