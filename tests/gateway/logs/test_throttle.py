"""Repeated log records of one kind: the first is written, then one summary line per interval.

Records go through real loggers to a real handler carrying the filter; the clock is a fake one except in
the timer test, which waits for the summary the timer thread writes.
"""

from __future__ import annotations

import io
import logging
import os
import threading

import pytest

from gateway.logs.context import LOG_FORMAT, RequestIdFilter, current_request_id
from gateway.logs.throttle import (
    SUMMARY_ATTRIBUTE,
    RepeatThrottle,
    flush_repeat_throttles,
    install_repeat_throttle,
)
from tests.harness.fake_clock import FakeClock


class Collecting(logging.Handler):
    """Keeps every record it is given; ``summary_seen`` is set when a summary arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.summary_seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if getattr(record, SUMMARY_ATTRIBUTE, False):
            self.summary_seen.set()

    @property
    def summaries(self) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, SUMMARY_ATTRIBUTE, False)]

    @property
    def plain(self) -> list[logging.LogRecord]:
        return [r for r in self.records if not getattr(r, SUMMARY_ATTRIBUTE, False)]


@pytest.fixture
def clock():
    return FakeClock(start=0.0)


@pytest.fixture
def sink(request):
    """A handler on a private logger tree ``t.<test name>``, detached afterwards."""
    handler = Collecting()
    root = logging.getLogger(f"t.{request.node.name}")
    root.propagate = False
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield root, handler
    root.removeHandler(handler)
    for f in list(handler.filters):
        if isinstance(f, RepeatThrottle):
            f.close()


def throttled(sink, clock, **options):
    root, handler = sink
    options.setdefault("timer", False)
    return root, handler, install_repeat_throttle(handler, clock=clock, **options)


def count_of(summary: logging.LogRecord) -> int:
    words = summary.getMessage().split()
    return int(words[words.index("suppressed") + 1].replace(",", ""))


def test_a_flood_of_one_kind_is_the_first_record_and_one_summary_per_interval(sink, clock):
    root, handler, throttle = throttled(sink, clock, interval=10)
    log = root.getChild("store")
    for i in range(10_000):  # 400 a second for 25 s, each with its own request id
        clock.now = i / 400
        log.warning("admission failed, store unavailable (request %s)", f"r{i}")
    throttle.flush()  # shutdown: the last, unfinished interval is told too

    [first] = handler.plain
    assert first.getMessage() == "admission failed, store unavailable (request r0)"
    summaries = handler.summaries
    assert [count_of(s) for s in summaries] == [3_999, 4_000, 2_000]  # intervals [0,10), [10,20), [20,25)
    assert sum(map(count_of, summaries)) + 1 == 10_000  # nothing lost
    assert all(s.name == log.name and s.levelno == logging.WARNING for s in summaries)
    assert summaries[0].getMessage() == ("suppressed 3,999 similar messages in the last 10 s; the last was: "
                                         "admission failed, store unavailable (request r3999)")
    assert "in the last 5.0 s" in summaries[-1].getMessage()  # the partial interval says how long it was


def test_different_loggers_templates_and_levels_are_different_kinds(sink, clock):
    root, handler, throttle = throttled(sink, clock, interval=10)
    a, b = root.getChild("a"), root.getChild("b")
    for i in range(50):
        a.warning("store down: %s", i)
        b.warning("store down: %s", i)
        a.warning("platform refused %s", i)
        a.error("store down: %s", i)
    throttle.flush()

    assert sorted((r.name, r.levelno, r.getMessage()) for r in handler.plain) == sorted([
        (a.name, logging.WARNING, "store down: 0"), (b.name, logging.WARNING, "store down: 0"),
        (a.name, logging.WARNING, "platform refused 0"), (a.name, logging.ERROR, "store down: 0")])
    assert sorted((s.name, s.levelno, count_of(s)) for s in handler.summaries) == sorted([
        (a.name, logging.WARNING, 49), (b.name, logging.WARNING, 49), (a.name, logging.WARNING, 49),
        (a.name, logging.ERROR, 49)])


def test_the_first_record_keeps_its_traceback_and_a_quiet_interval_starts_afresh(sink, clock):
    root, handler, throttle = throttled(sink, clock, interval=10)
    log = root.getChild("dispatch")

    def fail(n: int) -> None:
        try:
            raise RuntimeError(f"boom {n}")
        except RuntimeError:
            log.exception("dispatch round failed")

    for n in range(5):
        fail(n)
    clock.advance(10)  # the end of the flood's interval
    throttle.flush_due()
    clock.advance(10)  # a whole interval without one: forgotten
    throttle.flush_due()
    fail(5)  # written in full again

    first, again = handler.plain
    assert first.exc_info is not None and str(first.exc_info[1]) == "boom 0"
    assert "Traceback" in logging.Formatter().format(first)
    assert again.exc_info is not None and str(again.exc_info[1]) == "boom 5"
    [summary] = handler.summaries
    assert count_of(summary) == 4 and summary.exc_info is None


def test_pending_counts_are_written_at_exit_by_flush_repeat_throttles(sink, clock):
    root, handler, _ = throttled(sink, clock, interval=10)
    for i in range(3):
        root.warning("readiness check failed: %s", i)
    assert handler.summaries == []
    flush_repeat_throttles()  # what the atexit hook runs
    [summary] = handler.summaries
    assert count_of(summary) == 2 and summary.getMessage().endswith("readiness check failed: 2")


def test_memory_is_bounded_and_an_evicted_kind_still_gets_its_count_told(sink, clock):
    root, handler, throttle = throttled(sink, clock, interval=10, max_kinds=100)
    root.warning("the oldest kind %s", 1)
    root.warning("the oldest kind %s", 2)  # counted, not written
    for i in range(10_000):  # formatted before logging: each message is a kind of its own
        root.warning(f"unique message {i}")
        assert throttle.tracked <= 100
    summaries = handler.summaries
    assert [s.getMessage() for s in summaries] == [
        "suppressed 1 similar message in the last 0.0 s; the last was: the oldest kind 2"]
    assert len(handler.plain) == 1 + 10_000


def test_records_below_the_level_pass_untouched(sink, clock):
    root, handler, throttle = throttled(sink, clock, interval=10)
    access = root.getChild("access")
    for i in range(1_000):
        access.info("%d %s %s", 200, "GET", f"/api/session/status/{i}")
    throttle.flush()
    assert len(handler.plain) == 1_000 and handler.summaries == []
    assert throttle.tracked == 0


def test_the_timer_writes_the_summary_when_the_flood_stops(sink):
    root, handler = sink
    install_repeat_throttle(handler, interval=0.05)  # the real clock and the timer thread
    for i in range(100):
        root.warning("presence heartbeat failed (%s)", i)
    # No further record arrives: only the timer can write the count.
    assert handler.summary_seen.wait(10), "no summary after the flood stopped"
    [summary] = handler.summaries
    assert count_of(summary) == 99


def test_threads_logging_at_once_lose_no_count(sink, clock):
    root, handler, throttle = throttled(sink, clock, interval=10)
    start = threading.Barrier(8)

    def flood() -> None:
        start.wait()
        for i in range(1_000):
            root.warning("could not hand a connection to worker %d", i)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    throttle.flush()
    assert len(handler.plain) == 1
    [summary] = handler.summaries
    assert count_of(summary) == 7_999


def test_a_summary_written_during_a_request_does_not_carry_that_requests_id(sink, clock):
    root, _ = sink
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    throttle = install_repeat_throttle(handler, clock=clock, interval=10, timer=False)
    try:
        token = current_request_id.set("req-1")
        root.warning("admission failed: %s", 1)
        root.warning("admission failed: %s", 2)
        current_request_id.reset(token)
        clock.advance(10)
        token = current_request_id.set("req-3")
        root.warning("admission failed: %s", 3)  # ends the interval: the summary is written first
        current_request_id.reset(token)
    finally:
        throttle.close()
        root.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # the third record is counted in the next interval, told at close
    assert "[req-1] admission failed: 1" in lines[0]
    assert "[-] suppressed 1 similar message in the last 10 s; the last was: admission failed: 2" in lines[1]
    assert "[-] suppressed 1 similar message" in lines[2] and "admission failed: 3" in lines[2]


def test_a_forked_child_starts_with_its_own_counts(sink, clock):
    root, handler, _ = throttled(sink, clock, interval=10)
    root.warning("worker %d exited", 1)
    pid = os.fork()
    if pid == 0:  # the child: its first record of the kind is written, the parent's count is not its own
        root.warning("worker %d exited", 2)
        os._exit(0 if [r.getMessage() for r in handler.plain] == ["worker 1 exited", "worker 2 exited"] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_argument_that_logs_while_it_is_formatted_does_not_deadlock(sink, clock):
    root, handler, throttle = throttled(sink, clock, interval=10)

    class Chatty:
        def __str__(self) -> str:
            root.warning("formatting %s", "an argument")  # logging from inside a record being throttled
            return "chatty"

    def flood() -> None:
        for _ in range(3):
            root.warning("value: %s", Chatty())

    worker = threading.Thread(target=flood, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "logging deadlocked inside the throttle"
    throttle.flush()
    assert [r.getMessage() for r in handler.plain] == ["value: chatty", "formatting an argument"]
    [values] = [s for s in handler.summaries if "value: " in s.getMessage()]
    assert count_of(values) == 2
