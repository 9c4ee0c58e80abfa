"""The few running totals the admin dashboard charts, taken from the same registry a scrape reads.

Cumulative values, summed over every worker under ``serve --processes`` exactly as ``/metrics`` sums them:
the page turns them into rates and quantiles from the difference between two polls, as Prometheus does
with ``rate()`` and ``histogram_quantile()``. So the dashboard needs no Prometheus server, and shows the
same numbers one would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import Metric

from gateway.metrics.registry import PREFIX

_REQUESTS = PREFIX + "session_requests"
_HISTOGRAMS = {PREFIX + "queue_wait_seconds": "waitSeconds",
               PREFIX + "wait_estimate_error_seconds": "estimateErrorSeconds"}


def _histogram(metric: Metric) -> dict[str, Any]:
    buckets: list[dict[str, float]] = []
    count, total = 0.0, 0.0
    for sample in metric.samples:
        if sample.name.endswith("_bucket"):
            bound = float(sample.labels["le"])
            if math.isfinite(bound):  # the +Inf bucket is the count
                buckets.append({"le": bound, "count": int(sample.value)})
        elif sample.name.endswith("_count"):
            count = sample.value
        elif sample.name.endswith("_sum"):
            total = sample.value
    buckets.sort(key=lambda bucket: bucket["le"])
    return {"buckets": buckets, "count": int(count), "sum": total}


def dashboard_totals(families: Iterable[Metric]) -> dict[str, Any]:
    """``{"sessionRequests": {outcome: n}, "waitSeconds": histogram, "estimateErrorSeconds": histogram}``
    from the metrics of :meth:`gateway.metrics.registry.GatewayMetrics.collect`; a histogram is
    ``{"buckets": [{"le": bound, "count": cumulative}...], "count": n, "sum": s}``."""
    totals: dict[str, Any] = {"sessionRequests": {}}
    for metric in families:
        if metric.name == _REQUESTS:
            requests = totals["sessionRequests"]
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    outcome = sample.labels.get("outcome", "")
                    requests[outcome] = requests.get(outcome, 0) + int(sample.value)
        elif metric.name in _HISTOGRAMS:
            totals[_HISTOGRAMS[metric.name]] = _histogram(metric)
    for key in _HISTOGRAMS.values():
        totals.setdefault(key, {"buckets": [], "count": 0, "sum": 0.0})
    return totals
