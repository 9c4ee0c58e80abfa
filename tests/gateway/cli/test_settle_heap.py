"""``settle_heap``: what ``serve`` and every ``--processes`` worker do to the garbage collector at start-up."""

from __future__ import annotations

import gc

import pytest

from gateway.cli.serve import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def collector_restored():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_freezes_the_start_up_heap_and_raises_only_the_young_threshold(collector_restored) -> None:
    gc.set_threshold(700, 11, 12)
    kept = object()
    holder = [kept]  # a tracked container that exists before the freeze

    settle_heap()

    assert gc.get_freeze_count() > 0
    assert any(o is holder for o in gc.get_objects()) is False  # frozen: no longer walked by collections
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 11, 12)


def test_a_request_burst_no_longer_triggers_young_collections(collector_restored) -> None:
    """What the threshold is for: the objects of a few dozen requests in flight (each a few hundred
    containers that reference counting frees when it ends) stay under it, so no collection walks them."""
    settle_heap()
    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    in_flight = [[{"field": [i, j]} for j in range(100)] for i in range(32)]  # 32 requests' worth of objects
    gc.callbacks.append(count)
    try:
        for _ in range(50):
            in_flight.pop(0)
            in_flight.append([{"field": [0, j]} for j in range(100)])
    finally:
        gc.callbacks.remove(count)
    assert collections == []
