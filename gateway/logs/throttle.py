"""Repeated log lines of one kind, rate-limited: the first is written, then one summary per interval.

A Redis outage or a flood of bad requests makes the same warning fire for every request (62,000 lines in a
second were seen), which buries everything else and fills the disk. :class:`RepeatThrottle` is a
``logging.Filter`` on an output handler, so every module's records are covered without changing any call
site. Records of one *kind* (same logger, level and message template, ``record.msg``: the arguments, such as
request ids, may differ) are written once; while more keep arriving, they are counted instead, and one
line per interval says how many were left out and shows the last of them. A kind that stays quiet for a whole
interval is forgotten, so its next record is written in full again, traceback included.

Summaries come out when an interval ends: on the next record of any kind, or by a timer when nothing else
is logged, and on :meth:`RepeatThrottle.flush` at exit, so no count is lost silently. Records below
``level`` (by default INFO and DEBUG, such as the access log of successful requests) pass untouched.
Summaries are records like any other, written through the same handler and so in its format (text or
JSON); they carry ``repeat_summary``, ``suppressed`` and ``span_seconds`` as fields.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

#: Length of one counting interval.
DEFAULT_INTERVAL_SECONDS = 10.0
#: Most kinds tracked at once; beyond it the least recently seen kind is summarised and forgotten.
DEFAULT_MAX_KINDS = 1000
#: Longest example shown in a summary (a message can hold a whole request body).
EXAMPLE_CHARS = 500
#: Marks the summaries this module writes, so that they pass their own filter.
SUMMARY_ATTRIBUTE = "repeat_summary"

_Key = tuple[str, int, str]


@dataclass(slots=True)
class _Kind:
    name: str
    levelno: int
    pathname: str
    lineno: int
    func: str | None
    template: str
    started: float
    ends: float
    suppressed: int = 0
    last: str = ""


@dataclass(frozen=True, slots=True)
class _Summary:
    kind: _Kind
    count: int
    span: float
    last: str


class RepeatThrottle(logging.Filter):
    """Rate-limits repeated records on the way to ``handler`` (see the module's docstring).

    :param handler: the output this filter guards; summaries are written to it.
    :param interval: seconds per counting interval.
    :param level: records below it are never throttled.
    :param max_kinds: most kinds tracked at once (memory bound).
    :param clock: seconds, monotonic; tests pass a fake one.
    :param timer: write summaries from a timer thread when nothing else is logged; tests with a fake clock
        switch it off and call :meth:`flush_due`.
    """

    def __init__(self, handler: logging.Handler, *, interval: float = DEFAULT_INTERVAL_SECONDS,
                 level: int = logging.WARNING, max_kinds: int = DEFAULT_MAX_KINDS,
                 clock: Callable[[], float] = time.monotonic, timer: bool = True) -> None:
        super().__init__()
        if interval <= 0 or max_kinds < 1:
            raise ValueError("interval must be positive and max_kinds at least 1")
        self.handler = handler
        self.interval = interval
        self.level = level
        self.max_kinds = max_kinds
        self._clock = clock
        self._use_timer = timer
        self._lock = threading.Lock()
        self._kinds: OrderedDict[_Key, _Kind] = OrderedDict()
        self._next_sweep = float("inf")
        self._timer: threading.Timer | None = None

    @property
    def tracked(self) -> int:
        """How many kinds are tracked now."""
        return len(self._kinds)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level or getattr(record, SUMMARY_ATTRIBUTE, False):
            return True
        msg = record.msg
        key = (record.name, record.levelno, msg if isinstance(msg, str) else type(msg).__qualname__)
        now = self._clock()
        with self._lock:
            due = self._take_due(now) if now >= self._next_sweep else []
            kind = self._kinds.get(key)
            if kind is not None and kind.ends <= now:  # its interval ended since the last sweep
                if kind.suppressed:
                    due.append(self._restart(kind, now))
                else:
                    del self._kinds[key]
                    kind = None
            if kind is None:
                due.extend(self._track(key, record, now))
                passed = True
            else:
                self._kinds.move_to_end(key)
                kind.suppressed += 1
                passed = False
                self._arm_timer(now)
        if not passed:
            # Formatted outside the lock: an argument's __str__ may itself log. A summary written meanwhile
            # shows the template instead.
            kind.last = _text_of(record)
        self._write(due)
        return passed

    def flush_due(self) -> None:
        """Write the summaries of the intervals that have ended."""
        now = self._clock()
        with self._lock:
            due = self._take_due(now)
        self._write(due)

    def flush(self) -> None:
        """Write every pending count now (at shutdown), however far its interval has come."""
        now = self._clock()
        with self._lock:
            due = [self._summary(kind, now) for kind in self._kinds.values() if kind.suppressed]
            self._kinds.clear()
            self._next_sweep = float("inf")
            self._cancel_timer()
        self._write(due)

    def close(self) -> None:
        """Flush, stop the timer and detach from the handler."""
        self.flush()
        self.handler.removeFilter(self)
        _installed.discard(self)

    # -- inside the lock ------------------------------------------------------------------------------

    def _track(self, key: _Key, record: logging.LogRecord, now: float) -> list[_Summary]:
        evicted = []
        while len(self._kinds) >= self.max_kinds:
            _, oldest = self._kinds.popitem(last=False)
            if oldest.suppressed:  # its count must still be told
                evicted.append(self._summary(oldest, now))
        ends = now + self.interval
        self._kinds[key] = _Kind(record.name, record.levelno, record.pathname, record.lineno, record.funcName,
                                 key[2], started=now, ends=ends)
        self._next_sweep = min(self._next_sweep, ends)
        return evicted

    def _take_due(self, now: float) -> list[_Summary]:
        due = []
        for key, kind in list(self._kinds.items()):
            if kind.ends > now:
                continue
            if kind.suppressed:
                due.append(self._restart(kind, now))
            else:  # quiet for a whole interval: its next record is written in full
                del self._kinds[key]
        earliest = min((kind.ends for kind in self._kinds.values()), default=float("inf"))
        # At most about ten sweeps per interval, however many kinds end at different times.
        self._next_sweep = max(earliest, now + self.interval / 10)
        return due

    def _restart(self, kind: _Kind, now: float) -> _Summary:
        """Summarise an ended interval and keep counting: a long flood is one line per interval."""
        summary = self._summary(kind, kind.ends)
        kind.started, kind.ends = now, now + self.interval
        kind.suppressed, kind.last = 0, ""
        return summary

    @staticmethod
    def _summary(kind: _Kind, until: float) -> _Summary:
        return _Summary(kind, kind.suppressed, max(0.0, until - kind.started), kind.last or kind.template)

    def _arm_timer(self, now: float) -> None:
        if not self._use_timer or self._timer is not None:
            return
        pending = min((kind.ends for kind in self._kinds.values() if kind.suppressed), default=now)
        # A little past the end, so that the interval has surely ended by the clock when it fires.
        self._timer = threading.Timer(max(0.0, pending - now) + 0.01, self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- outside the lock -----------------------------------------------------------------------------

    def _on_timer(self) -> None:
        now = self._clock()
        with self._lock:
            self._timer = None
            due = self._take_due(now)
            if any(kind.suppressed for kind in self._kinds.values()):
                self._arm_timer(now)
        self._write(due)

    def _write(self, summaries: list[_Summary]) -> None:
        for summary in summaries:
            record = _summary_record(summary)
            # In an empty context: a summary belongs to no request, whichever thread or task writes it.
            contextvars.Context().run(self.handler.handle, record)

    def _after_fork_in_child(self) -> None:
        # The parent reports its own counts; a lock or timer taken over mid-use would never be released.
        self._lock = threading.Lock()
        self._timer = None
        self._kinds.clear()
        self._next_sweep = float("inf")


def _text_of(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # arguments that do not fit the template: the handler will say so for the first one
        text = str(record.msg)
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"


def _summary_record(summary: _Summary) -> logging.LogRecord:
    kind = summary.kind
    noun = "message" if summary.count == 1 else "messages"
    span = f"{summary.span:.0f}" if summary.span >= 10 else f"{summary.span:.1f}"
    text = f"suppressed {summary.count:,} similar {noun} in the last {span} s; the last was: {summary.last}"
    record = logging.LogRecord(kind.name, kind.levelno, kind.pathname, kind.lineno, text, None, None,
                               func=kind.func)
    setattr(record, SUMMARY_ATTRIBUTE, True)
    # Fields of their own in the JSON log, so a collector can add the counts up without parsing the text.
    record.suppressed = summary.count
    record.span_seconds = round(summary.span, 3)
    return record


_installed: weakref.WeakSet[RepeatThrottle] = weakref.WeakSet()


def install_repeat_throttle(handler: logging.Handler, **options: object) -> RepeatThrottle:
    """Put a :class:`RepeatThrottle` on ``handler`` (options as its constructor's); it is flushed at exit."""
    throttle = RepeatThrottle(handler, **options)  # type: ignore[arg-type]
    handler.addFilter(throttle)
    _installed.add(throttle)
    return throttle


def flush_repeat_throttles() -> None:
    """Write the pending counts of every installed throttle (at shutdown)."""
    for throttle in list(_installed):
        throttle.flush()


def _after_fork_in_child() -> None:
    for throttle in list(_installed):
        throttle._after_fork_in_child()


atexit.register(flush_repeat_throttles)
os.register_at_fork(after_in_child=_after_fork_in_child)
