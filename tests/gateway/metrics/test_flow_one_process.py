"""One gateway process: a scripted flow (admit, queue, every refusal, a hub client, a leave, webhooks, a
store outage) and what ``/metrics`` says about it, parsed with prometheus_client's own parser.

The gateway runs on a ``redis-server`` of the test's own, which the test stops for the store-unavailable
step and then starts again (empty) so the gateway can shut down as usual.
"""

from __future__ import annotations

import pytest
from tornado.httpclient import AsyncHTTPClient

from gateway.redis.client import open_redis
from tests.harness.metrics import (
    ScriptedFlow,
    assert_flow_counted,
    assert_queue_state,
    flow_config,
    hub_connections,
    scrape,
    until,
)
from tests.harness.stack import start_stack

pytestmark = [pytest.mark.redis]


async def test_a_scripted_flow_is_counted_step_by_step(redis_proc, tmp_path) -> None:
    client = open_redis(redis_proc.url)
    stack = await start_stack(client, config=flow_config(tmp_path))
    http = AsyncHTTPClient(force_instance=True)
    url = stack.base_url + "/metrics"
    flow = ScriptedFlow(http, stack.base_url, stack.sim_url)
    try:
        first, second = await flow.until_refusals()
        hub = await flow.register(first)
        before = await scrape(http, url)
        assert_queue_state(before, queued=2, active=1)
        assert hub_connections(before) == 1
        assert before.value("iqra_gateway_queue_wait_seconds_count") == 0

        await flow.leave_and_end(second, first)
        after = await scrape(http, url)
        assert_flow_counted(after)
        assert_queue_state(after, queued=0, active=1)  # the queued request now holds the slot
        await hub.close()
        flow.result.hub = None

        async def hub_connection_counted_out() -> bool:
            return hub_connections(await scrape(http, url)) == 0
        await until(hub_connection_counted_out, "the closed hub connection leaves the gauge")

        redis_proc.stop()
        await flow.ask("s", expect=503)
        down = await scrape(http, url)
        assert_flow_counted(down, store_unavailable=1)
        assert down.value("iqra_gateway_store_up") == 0
        assert not down.has("iqra_gateway_queue_length")  # not known: absent rather than stale
        assert down.value("iqra_gateway_redis_errors_total", component="http") == 1
        assert down.value("iqra_gateway_redis_errors_total", component="metrics") == 1
        assert down.value("iqra_gateway_session_cap", source="config") == 1
    finally:
        if redis_proc.pid is None:
            redis_proc.start()
        if flow.result.hub is not None:
            await flow.result.hub.close()
        http.close()
        await stack.close()
        await client.aclose()
