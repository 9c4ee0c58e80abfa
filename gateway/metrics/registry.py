"""The gateway's Prometheus metrics: their names and labels, what feeds them, and how one process's values
reach a scrape.

One process: every metric lives in the gateway's own registry and a scrape reads it as it is.

``serve --processes N``: prometheus_client's multiprocess mode. The supervisor points
``PROMETHEUS_MULTIPROC_DIR`` at a private directory before any worker imports the library
(:mod:`gateway.metrics.processes`); each worker then keeps its values in memory-mapped files named after its
pid there, and a scrape, on whichever worker answers, sums every file. Counters and histograms of a worker
that died stay in the sum (a counter must never go down), and a restarted worker has a new pid, so a new
file starting at zero: nothing is counted twice. The one gauge kept per process (hub connections) is a
``livesum`` gauge, whose file the supervisor deletes when its worker dies.

Cluster-wide state (queue, sessions, the cap) is not kept here: whoever answers a scrape reads it from
Redis once (:mod:`gateway.metrics.cluster`). What is here is fed by the event hub (queue outcomes,
dispatches, departures, store failures), by the HTTP handlers (request outcomes and durations), by the
platform client (its calls) and by the session hub (connections, the wait estimate's error). Feeding costs a
dictionary look-up and one or two increments: label children are made once, at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.http.base import ORIGIN_NOT_ALLOWED_MESSAGE
from gateway.http.handlers import SessionOutcome as Outcome
from gateway.http.handlers import WebhookResult
from gateway.metrics.processes import MULTIPROC_ENV, multiprocess_dir
from gateway.model.departures import Departure
from gateway.platform.errors import FailureKind
from gateway.queue.events import (
    DispatchAttempted,
    DispatchFailed,
    Event,
    QueueChanged,
    SessionReady,
    StoreFailed,
)
from geo.policy import BLOCKED_DATACENTER, BLOCKED_NETWORK, BLOCKED_PROXY, BLOCKED_TOR, BLOCKED_VPN
from ratelimit.rules import CLIENT_PREFIX, IP_PREFIX, Policy, Rule, refusal_message
from signalr.options import HttpTransportType

PREFIX = "iqra_gateway_"


#: The refusal texts (what the client is shown) -> the reason label.
_BLOCK_REASONS = {BLOCKED_VPN.reason: "vpn", BLOCKED_PROXY.reason: "proxy", BLOCKED_DATACENTER.reason: "datacenter",
                  BLOCKED_TOR.reason: "tor", BLOCKED_NETWORK.reason: "network", ORIGIN_NOT_ALLOWED_MESSAGE: "origin"}
_LIMIT_NAMES = {Policy.CONCURRENT: "concurrency", Policy.HOURLY: "hourly", Policy.DAILY: "daily"}
_LIMIT_REASONS = {refusal_message(Rule(policy=policy, subject=prefix + "x", limit=1), by_client_identifier=by_id): name
                  for policy, name in _LIMIT_NAMES.items() for prefix in (CLIENT_PREFIX, IP_PREFIX)
                  for by_id in (True, False)}
#: Anything else refused (a text this table does not know yet) is counted, with this reason.
OTHER_REASON = "other"
_REASONS = {Outcome.BLOCKED: _BLOCK_REASONS, Outcome.RATE_LIMITED: _LIMIT_REASONS}

#: How a queued request left without a session -> the abandonment reason label.
_ABANDONMENTS = {Departure.LEFT.value: "left", Departure.UNREGISTERED.value: "unregistered",
                 Departure.DISCONNECTED.value: "disconnected", Departure.WITHDRAWN.value: "withdrawn",
                 Departure.REMOVED.value: "removed"}
#: Who meets Redis errors (:class:`gateway.queue.events.StoreFailed` components, and the callers of
#: :meth:`GatewayMetrics.store_error`).
STORE_COMPONENTS = ("http", "dispatcher", "hub", "positions", "abandonment", "metrics", "epoch", "capacity", "admin")
PLATFORM_OPERATIONS = ("initiate", "concurrency")
CALL_RESULTS = ("success", *(kind.value for kind in FailureKind))
HUB_PROTOCOLS = ("json", "messagepack")

_REQUEST_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAIT_SECONDS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
_ERROR_SECONDS = (-600.0, -300.0, -120.0, -60.0, -30.0, -10.0, -5.0, 0.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_PLATFORM_SECONDS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)


class GatewayMetrics:
    """Every metric one gateway process feeds, and the registry a scrape reads them from.

    Make one per process: in the multiprocess mode two instances in one process would write the same
    file entries over each other.

    :param wall_clock: for the wait since a request was queued (its stamp is wall-clock time too).
    :raises RuntimeError: when the multiprocess mode is asked for but prometheus_client was imported
        before the directory was set (its values would stay in this process).
    """

    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._wall_clock = wall_clock
        self.multiprocess = multiprocess_dir()
        if self.multiprocess and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(f"{MULTIPROC_ENV} was set after prometheus_client was imported; "
                               "the workers' metrics could not be summed")
        # A "_created" series beside every counter and histogram would double a scrape for nothing an
        # operator reads (the multiprocess mode has none either); the library's switch is process-wide.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        # In the multiprocess mode the values live in the files, and the registry reads all of them.
        own = None if self.multiprocess else self.registry
        if self.multiprocess:
            MultiProcessCollector(self.registry, path=self.multiprocess)
        self._define(own)
        self._bind_children()

    def _define(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(PREFIX + name, doc, labels, registry=registry, buckets=buckets)

        self.requests = counter("session_requests_total", "Session requests by how they ended.", ("outcome", "reason"))
        self.request_seconds = histogram("session_request_duration_seconds",
                                         "Time to answer a session request, by outcome.", ("outcome",), _REQUEST_SECONDS)
        self.queue_wait = histogram("queue_wait_seconds", "Time from a request's 202 to its SessionReady.", (),
                                    _WAIT_SECONDS)
        self.estimate_error = histogram(
            "wait_estimate_error_seconds", "The wait a queued client really had minus the first "
            "estimatedWaitSeconds it was told (positive: it waited longer than told).", (), _ERROR_SECONDS)
        self.platform_calls = counter("platform_calls_total", "Calls to the Iqra platform by result.",
                                      ("operation", "result"))
        self.platform_seconds = histogram("platform_call_duration_seconds", "Duration of calls to the Iqra platform.",
                                          ("operation",), _PLATFORM_SECONDS)
        self.webhooks = counter("webhooks_total", "Session-ended webhooks by result.", ("result",))
        self.abandonments = counter("queue_abandonments_total",
                                    "Queued requests that left without a session, by reason.", ("reason",))
        self.dispatch_attempts = counter("dispatch_attempts_total",
                                         "Platform calls made for queued requests, by result.", ("result",))
        self.dispatch_failures = counter("dispatch_failures_total",
                                         "Queued requests that got SessionFailed, by the last failure's kind.", ("kind",))
        self.redis_errors = counter("redis_errors_total", "Failed Redis calls, by the component that made them.",
                                    ("component",))
        self.hub_connections = Gauge(PREFIX + "hub_connections", "Open /sessionHub connections, by transport "
                                     "and protocol.", ("transport", "protocol"), registry=registry,
                                     multiprocess_mode="livesum")

    def _bind_children(self) -> None:
        """Every label set made once (so each series is exported from the start, at 0, and feeding skips
        the library's label look-up)."""
        self._outcomes: dict[tuple[str, str | None], tuple[Counter, Histogram]] = {}
        for outcome in Outcome:
            reasons = _REASONS.get(outcome)
            for detail, reason in (reasons.items() if reasons else ((None, ""),)):
                self._outcomes[(outcome, detail)] = self._outcome_children(outcome, reason)
            if reasons:
                self._outcomes[(outcome, None)] = self._outcome_children(outcome, OTHER_REASON)
        self._platform = {(op, result): (self.platform_calls.labels(op, result), self.platform_seconds.labels(op))
                          for op in PLATFORM_OPERATIONS for result in CALL_RESULTS}
        self._webhooks = {result: self.webhooks.labels(result) for result in WebhookResult}
        self._abandonments = {reason: self.abandonments.labels(label) for reason, label in _ABANDONMENTS.items()}
        self._attempts = {result: self.dispatch_attempts.labels(result) for result in CALL_RESULTS}
        self._failures = {kind: self.dispatch_failures.labels(kind)
                          for kind in (*(kind.value for kind in FailureKind), "gateway")}
        self._redis_errors = {component: self.redis_errors.labels(component) for component in STORE_COMPONENTS}
        self._hub = {(transport.value, protocol): self.hub_connections.labels(transport.value, protocol)
                     for transport in HttpTransportType for protocol in HUB_PROTOCOLS}
        self._events: dict[type, Callable[[object], None]] = {
            SessionReady: self._ready, QueueChanged: self._queue_changed, DispatchAttempted: self._attempted,
            DispatchFailed: self._dispatch_failed, StoreFailed: self._store_failed}

    def _outcome_children(self, outcome: str, reason: str) -> tuple[Counter, Histogram]:
        return self.requests.labels(outcome, reason), self.request_seconds.labels(outcome)

    # -- what a scrape reads -------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """This process's metrics, or in the multiprocess mode every worker's, summed."""
        return iter(self.registry.collect())

    # -- feeding: the HTTP handlers ----------------------------------------------------------------------

    def session_request(self, outcome: str, detail: str | None, seconds: float) -> None:
        """A session request was answered: ``detail`` is the refusal text of a block or a rate limit."""
        children = self._outcomes.get((outcome, detail))
        if children is None:
            children = self._outcomes.get((outcome, None)) or self._outcomes[(Outcome.ERROR, None)]
        counter, duration = children
        counter.inc()
        duration.observe(seconds)

    def webhook(self, result: str) -> None:
        child = self._webhooks.get(result)
        if child is not None:
            child.inc()

    def store_error(self, component: str) -> None:
        child = self._redis_errors.get(component)
        if child is not None:
            child.inc()

    # -- feeding: the platform client (gateway.platform.client.CallObserver) -----------------------------

    def platform_call(self, operation: str, result: str, seconds: float) -> None:
        children = self._platform.get((operation, result))
        if children is not None:
            children[0].inc()
            children[1].observe(seconds)

    # -- feeding: the session hub ---------------------------------------------------------------------

    def hub_connected(self, transport: str | None, protocol: str | None) -> None:
        child = self._hub.get((transport or "", protocol or ""))
        if child is not None:
            child.inc()

    def hub_disconnected(self, transport: str | None, protocol: str | None) -> None:
        child = self._hub.get((transport or "", protocol or ""))
        if child is not None:
            child.dec()

    def wait_estimate_error(self, seconds: float) -> None:
        self.estimate_error.observe(seconds)

    # -- feeding: the event hub ---------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """EventHub subscriber."""
        handler = self._events.get(type(event))
        if handler is not None:
            handler(event)

    def _ready(self, event: SessionReady) -> None:  # type: ignore[override]
        if event.queued_at is not None:
            # Clocks of two hosts may disagree by a little: a wait never reads as negative.
            self.queue_wait.observe(max(0.0, self._wall_clock() - event.queued_at))

    def _queue_changed(self, event: QueueChanged) -> None:
        child = self._abandonments.get(event.reason)
        if child is not None:
            child.inc()

    def _attempted(self, event: DispatchAttempted) -> None:
        child = self._attempts.get(event.result)
        if child is not None:
            child.inc()

    def _dispatch_failed(self, event: DispatchFailed) -> None:
        child = self._failures.get(event.kind)
        if child is not None:
            child.inc()

    def _store_failed(self, event: StoreFailed) -> None:
        self.store_error(event.component)

