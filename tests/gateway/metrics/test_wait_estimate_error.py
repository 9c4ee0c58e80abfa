"""How far the ``estimatedWaitSeconds`` a client was told was from the wait it had: the first estimate
each waiting client of this process is sent is kept, and compared with the time it left the queue for
its session (seen by a position round, or its ``SessionReady`` here, whichever comes first). Position
rounds run on injected I/O and a fake clock; the histogram is the real one."""

from __future__ import annotations

from prometheus_client import generate_latest

from gateway.live.positions import PositionBroadcaster
from gateway.metrics.registry import GatewayMetrics
from tests.harness.fake_clock import FakeClock
from tests.harness.metrics import Scrape


def _histogram(metrics: GatewayMetrics) -> tuple[float, ...]:
    """Observations at most 0, 10 and 30 s, and in all. (The error can be negative, so the library
    exports no ``_sum``: a sum of signed values is not a counter.)"""
    scraped = Scrape(generate_latest(metrics.registry).decode())
    return (*(scraped.value("iqra_gateway_wait_estimate_error_seconds_bucket", le=le) for le in ("0.0", "10.0", "30.0")),
            scraped.value("iqra_gateway_wait_estimate_error_seconds_count"))


def _broadcaster(clock: FakeClock, queue: list[str], local: list[str], metrics: GatewayMetrics) -> PositionBroadcaster:
    async def queue_ids() -> list[str]:
        return list(queue)

    async def served() -> list[float]:
        return [clock.now - 20.0, clock.now - 10.0]  # one request served every 10 s

    return PositionBroadcaster(queue_ids=queue_ids, served_times=served, local_requests=lambda: list(local),
                               send=lambda rid, position, wait: None, clock=clock, monotonic=lambda: 0.0,
                               on_estimate_error=metrics.wait_estimate_error)


async def test_a_request_that_leaves_the_queue_settles_its_first_estimate() -> None:
    clock, metrics = FakeClock(), GatewayMetrics()
    queue, local = ["x", "a", "b"], ["a", "b"]
    broadcaster = _broadcaster(clock, queue, local, metrics)
    await broadcaster.run_once()  # a is told 20 s (position 2), b 30 s
    clock.advance(5)
    queue.remove("x")
    await broadcaster.run_once()  # later estimates are not what a client decided to wait on
    clock.advance(30)
    queue.remove("a")  # served 35 s after it was told 20 s
    await broadcaster.run_once()
    assert _histogram(metrics) == (0, 0, 1, 1)  # waited 15 s longer than told
    broadcaster.retire("a", served=True)  # its SessionReady, here too: already settled, not counted twice
    assert _histogram(metrics) == (0, 0, 1, 1)
    clock.advance(5)
    broadcaster.retire("b", served=True)  # served 40 s after it was told 30 s, before any round saw it go
    assert _histogram(metrics) == (0, 1, 2, 2)


async def test_a_request_that_failed_or_lost_its_connection_settles_nothing() -> None:
    clock, metrics = FakeClock(), GatewayMetrics()
    queue, local = ["x", "a", "b"], ["a", "b"]
    broadcaster = _broadcaster(clock, queue, local, metrics)
    await broadcaster.run_once()
    broadcaster.retire("a")  # SessionFailed
    broadcaster.forget("b")  # its last connection here closed
    local.clear()
    queue.clear()
    await broadcaster.run_once()
    assert _histogram(metrics) == (0, 0, 0, 0)
