"""The wait estimate: how long a place in the queue takes, from the times queued requests were served."""

from __future__ import annotations

import math
from collections.abc import Sequence


def service_gap(served_times: Sequence[float], *, now: float, waiting_since: float | None = None) -> float | None:
    """Seconds per served request, or ``None`` while the rate is unknown (see :func:`estimate_wait_seconds`).

    :param served_times: times at which queued requests were served, oldest first.
    :param now: the current time, same clock.
    :param waiting_since: when the request now at the front of the queue arrived, if known. A stall is
        only counted from then: time when nobody waited (an idle night) says nothing about the rate, and
        counting it would promise a crowd arriving in the morning hours of waiting.
    """
    if len(served_times) < 2:
        return None
    span = served_times[-1] - served_times[0]
    if span <= 0:
        return None
    stalled_since = served_times[-1] if waiting_since is None else max(served_times[-1], waiting_since)
    return max(span / (len(served_times) - 1), now - stalled_since)


def wait_for_gap(position: int, gap: float | None) -> int | None:
    """Expected seconds until ``position`` is served when one request is served every ``gap`` seconds."""
    if gap is None or position < 1:
        return None
    return max(1, math.ceil(position * gap))


def estimate_wait_seconds(position: int, served_times: Sequence[float], *, now: float) -> int | None:
    """Expected seconds until ``position`` is served, or ``None`` while the rate is unknown.

    The mean gap between observed services gives the rate; when nothing has been served for longer
    than that gap, the time since the last service is used instead, so a stalled queue's estimate
    grows rather than promising a rate it no longer has.

    :param position: 1-based queue position.
    :param served_times: times at which queued requests were served, oldest first.
    :param now: the current time, same clock.
    """
    return wait_for_gap(position, service_gap(served_times, now=now))
