"""What each feed of the metrics counts, label by label, on the real registry (no server)."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from gateway.metrics.processes import MULTIPROC_ENV
from gateway.metrics.registry import GatewayMetrics
from gateway.model.departures import Departure
from gateway.queue.events import QueueChanged, SessionReady
from tests.harness.metrics import Scrape


def _scrape(metrics: GatewayMetrics) -> Scrape:
    return Scrape(generate_latest(metrics.registry).decode())


@pytest.mark.parametrize(("departure", "reason"), [
    (Departure.LEFT, "left"), (Departure.UNREGISTERED, "unregistered"),
    (Departure.DISCONNECTED, "disconnected"), (Departure.WITHDRAWN, "withdrawn"),
])
def test_every_way_out_of_the_queue_is_an_abandonment_reason(departure: Departure, reason: str) -> None:
    metrics = GatewayMetrics()
    metrics.on_event(QueueChanged(reason=str(departure)))
    metrics.on_event(QueueChanged(reason="joined"))  # not a departure
    scraped = _scrape(metrics)
    assert scraped.value("iqra_gateway_queue_abandonments_total", reason=reason) == 1
    total = sum(value for (name, _), value in scraped.samples.items() if name == "iqra_gateway_queue_abandonments_total")
    assert total == 1


def test_a_refusal_text_nobody_mapped_is_counted_as_other() -> None:
    metrics = GatewayMetrics()
    metrics.session_request("blocked", "Access denied.", 0.01)
    metrics.session_request("rate_limited", "Daily rate limit exceeded.", 0.01)
    metrics.session_request("no such outcome", None, 0.01)
    scraped = _scrape(metrics)
    assert scraped.value("iqra_gateway_session_requests_total", outcome="blocked", reason="other") == 1
    assert scraped.value("iqra_gateway_session_requests_total", outcome="rate_limited", reason="daily") == 1
    assert scraped.value("iqra_gateway_session_requests_total", outcome="error", reason="") == 1


def test_the_wait_is_measured_from_the_stamp_and_never_negative() -> None:
    now = [1000.0]
    metrics = GatewayMetrics(wall_clock=lambda: now[0])
    metrics.on_event(SessionReady(request_id="a", web_socket_url="wss://x", queued_at=958.0))
    metrics.on_event(SessionReady(request_id="b", web_socket_url="wss://x", queued_at=1000.5))  # a host's clock ahead
    metrics.on_event(SessionReady(request_id="c", web_socket_url="wss://x"))  # an entry stored without the time
    scraped = _scrape(metrics)
    assert scraped.value("iqra_gateway_queue_wait_seconds_count") == 2
    assert scraped.value("iqra_gateway_queue_wait_seconds_sum") == 42.0
    assert scraped.value("iqra_gateway_queue_wait_seconds_bucket", le="60.0") == 2


def test_the_multiprocess_mode_refuses_a_library_imported_too_early(monkeypatch, tmp_path) -> None:
    # This process imported prometheus_client without the variable: values would stay in memory, and a
    # scrape on another worker would never see them. Say so instead of summing nothing.
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="after prometheus_client was imported"):
        GatewayMetrics()
