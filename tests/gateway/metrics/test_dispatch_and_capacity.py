"""The queue's side of the metrics on a real stack: dispatch attempts and failures by kind, and the
effective cap when it comes from the platform (unknown, then learned)."""

from __future__ import annotations

import math

from tornado.httpclient import AsyncHTTPClient

from gateway.queue.capacity import CapReading, CapSource, capacity_reading
from gateway.queue.capacity import CapacityPolicy, PlatformUsage
from tests.harness.metrics import scrape, until
from tests.harness.stack import base_config, body_of, conversation_id_of, queued_request


async def test_a_dispatch_that_keeps_failing_counts_each_call_and_one_failure(stack_factory) -> None:
    stack = await stack_factory(config=base_config(cap=1))
    admitted = await stack.request_session()
    conversation = conversation_id_of(body_of(admitted)["webSocketUrl"])
    waiting = await queued_request(stack)
    # Three 500s: certainly no session each time, so the dispatcher calls again, up to MaxDispatchAttempts (3).
    await stack.sim_call("POST", "/_sim/fail", {"count": 3, "mode": "http500"})
    assert (await stack.end(conversation)).code == 200
    outcome = await stack.outcome(waiting)
    assert type(outcome).__name__ == "SessionFailed"
    http = AsyncHTTPClient(force_instance=True)
    try:
        scraped = await scrape(http, stack.base_url + "/metrics")
    finally:
        http.close()
    assert scraped.value("iqra_gateway_dispatch_attempts_total", result="retryable") == 3
    assert scraped.value("iqra_gateway_dispatch_attempts_total", result="success") == 0
    assert scraped.value("iqra_gateway_dispatch_failures_total", kind="retryable") == 1
    assert scraped.value("iqra_gateway_platform_calls_total", operation="initiate", result="retryable") == 3
    assert scraped.value("iqra_gateway_queue_wait_seconds_count") == 0  # no session: no wait to report


async def test_the_cap_learned_from_the_platform_is_reported_with_its_source(stack_factory) -> None:
    stack = await stack_factory(config=base_config(cap=None), concurrency_limit=7)
    http = AsyncHTTPClient(force_instance=True)
    url = stack.base_url + "/metrics"
    try:
        async def learned() -> bool:  # the first sync runs at start-up, in the background
            return not math.isnan((await scrape(http, url)).value("iqra_gateway_session_cap", source="platform"))
        await until(learned, "the platform's limit is learned")
        scraped = await scrape(http, url)
    finally:
        http.close()
    assert scraped.value("iqra_gateway_session_cap", source="platform") == 7
    assert scraped.value("iqra_gateway_platform_calls_total", operation="concurrency", result="success") >= 1
    assert scraped.value("iqra_gateway_platform_call_duration_seconds_count", operation="concurrency") >= 1


def test_the_cap_reading_says_unknown_until_the_platform_answers() -> None:
    platform = CapacityPolicy(global_cap=None, campaign_caps={})
    assert capacity_reading(platform) == CapReading(None, CapSource.PLATFORM)
    platform.learn(PlatformUsage(current=3, limit=10), ours=1)  # 2 calls are not ours: 8 left for us
    assert capacity_reading(platform) == CapReading(8, CapSource.PLATFORM)
    assert capacity_reading(CapacityPolicy(global_cap=4, campaign_caps={})) == CapReading(4, CapSource.CONFIG)
