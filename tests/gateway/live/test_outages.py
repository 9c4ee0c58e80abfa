"""StoreOutages: the intervals the store did not answer, which the abandonment reaper leaves out."""

from __future__ import annotations

import pytest

from gateway.live.outages import StoreOutages


def test_no_calls_no_outage() -> None:
    outages = StoreOutages()
    assert not outages.failing
    assert outages.overlap(0, 100) == 0
    assert outages.excused(100, 45) == 0


def test_a_failed_stretch_counts_from_the_first_unanswered_call_to_the_next_answer() -> None:
    outages = StoreOutages()
    assert outages.succeeded(10, 10.01) is False
    outages.failed(sent_at=12)
    outages.failed(sent_at=14)
    assert outages.failing
    # Under way: counted up to "now".
    assert outages.overlap(0, 20) == pytest.approx(8)
    assert outages.succeeded(sent_at=21, answered_at=21.01) is True
    assert not outages.failing
    assert outages.overlap(0, 100) == pytest.approx(9.01)
    assert outages.overlap(15, 100) == pytest.approx(6.01)


def test_a_slow_answer_is_an_outage_of_its_own_length() -> None:
    # A frozen Redis that resumes before the command timeout fails nothing, but no heartbeat landed.
    outages = StoreOutages(slow_after=1.0)
    assert outages.succeeded(sent_at=50, answered_at=56) is True
    assert outages.overlap(0, 100) == pytest.approx(6)
    assert outages.succeeded(sent_at=60, answered_at=60.5) is False


def test_overlapping_calls_merge_and_are_not_counted_twice() -> None:
    outages = StoreOutages()
    outages.succeeded(10, 16)
    outages.succeeded(12, 18)
    outages.succeeded(30, 32)
    assert outages.overlap(0, 100) == pytest.approx(8 + 2)


def test_the_deadline_is_widened_by_the_outage_inside_it() -> None:
    outages = StoreOutages()
    outages.succeeded(100, 140)  # 40 s frozen
    # A 45 s grace ending at 150 looks back to 105: 35 s of it were outage; widened to 70 s it finds all 40.
    assert outages.excused(150, 45) == pytest.approx(40)
    # Long after, nothing is excused.
    assert outages.excused(1000, 45) == 0


def test_memory_is_bounded_and_old_intervals_are_forgotten() -> None:
    outages = StoreOutages(max_intervals=4, horizon=1000)
    for i in range(50):
        outages.succeeded(i * 10, i * 10 + 2)
    assert len(outages._intervals) <= 4
    # Merging only lengthens: the most recent outage still counts fully.
    assert outages.overlap(490, 492) == pytest.approx(2)
    outages.succeeded(5000, 5000.1)
    assert outages.overlap(0, 5000) == 0
