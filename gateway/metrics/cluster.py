"""Gauges of the whole deployment, read from Redis once per scrape by whichever process answers it.

Queue length and sessions are shared state: every process sees the same numbers, so keeping them as
per-process gauges would report them once per worker (and summing would multiply them). Instead a scrape
reads them from the admission store's keys in one MULTI/EXEC round trip (a consistent snapshot). The
per-campaign queue length costs a read of every waiting entry's campaign, bounded by ``Queue.MaxLength``;
the rest is a handful of counters and the (small) table of live sessions. Leases that expired and that
no call has reaped yet are still counted, as :meth:`gateway.admission.store.AdmissionStore.counts` does.

The effective cap is an operator's override when one is set (read with the rest, from the store), else
this process's own view (:func:`capacity_reading`), which every process shares: the configured cap, or the
one learned from the platform.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from redis.exceptions import RedisError

from gateway.admission.control import Controls, controls_from
from gateway.admission.keys import AdmissionKeys
from gateway.metrics.registry import PREFIX
from gateway.queue.capacity import CapReading


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSnapshot:
    """What the store holds now: waiting entries, pending and active sessions, in all and per campaign."""

    queued: int
    active: int
    pending: int
    queued_by_campaign: Mapping[str, int] = field(default_factory=dict)
    active_by_campaign: Mapping[str, int] = field(default_factory=dict)
    pending_by_campaign: Mapping[str, int] = field(default_factory=dict)
    controls: Controls = field(default_factory=Controls)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def read_snapshot(redis: aioredis.Redis, keys: AdmissionKeys) -> ClusterSnapshot:
    """One MULTI/EXEC round trip over the admission store's keys (see :mod:`gateway.admission.keys`).

    :raises RedisError: the store did not answer.
    """
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zcard(keys.queue)
        pipe.zcard(keys.active)
        pipe.zcard(keys.pending)
        pipe.hgetall(keys.in_use)  # campaign -> pending + active leases
        pipe.hvals(keys.active_meta)  # the campaign of each live session
        pipe.hgetall(keys.entry_campaign)  # the campaign of each waiting or dispatching entry
        pipe.hkeys(keys.entry_lease)  # the entries being dispatched (no longer waiting)
        pipe.hmget(keys.control, "paused", "cap")  # the operators' controls
        (queued, active, pending, in_use, active_campaigns, entry_campaigns, dispatching,
         control) = await pipe.execute()
    active_by = Counter(_text(c) for c in active_campaigns)
    pending_by = {campaign: max(0, int(n) - active_by.get(campaign, 0))
                  for campaign, n in ((_text(c), n) for c, n in in_use.items())}
    leased = {_text(rid) for rid in dispatching}
    queued_by = Counter(_text(c) for rid, c in entry_campaigns.items() if _text(rid) not in leased)
    return ClusterSnapshot(queued=int(queued), active=int(active), pending=int(pending), queued_by_campaign=queued_by,
                           active_by_campaign=active_by, pending_by_campaign=pending_by,
                           controls=controls_from(*control))


class ClusterGauges:
    """Builds the deployment's gauges for one scrape.

    :param redis: the shared store's client.
    :param keys: the admission store's key names.
    :param campaigns: the configured campaigns (reported at 0 when idle, so their series always exist).
    :param campaign_caps: the configured per-campaign caps.
    :param cap: the effective global cap and its source, given the operators' override
        (:func:`capacity_reading`).
    :param on_store_error: told when the store did not answer a scrape (counted as a Redis error).
    """

    def __init__(self, *, redis: aioredis.Redis, keys: AdmissionKeys, campaigns: Iterable[str],
                 campaign_caps: Mapping[str, int], cap: Callable[[int | None], CapReading],
                 on_store_error: Callable[[], None] = lambda: None) -> None:
        self._redis = redis
        self._keys = keys
        self._campaigns = tuple(campaigns)
        self._campaign_caps = dict(campaign_caps)
        self._cap = cap
        self._on_store_error = on_store_error

    async def collect(self) -> list[Metric]:
        """The gauges; without the store's numbers (and ``store_up`` 0) when it does not answer."""
        up = GaugeMetricFamily(PREFIX + "store_up", "Whether the scrape could read the shared store (Redis): 1 or 0.")
        try:
            snapshot = await read_snapshot(self._redis, self._keys)
        except RedisError:
            self._on_store_error()
            up.add_metric([], 0)
            return [up, *self._caps(None)]
        up.add_metric([], 1)
        paused = GaugeMetricFamily(PREFIX + "dispatch_paused", "Whether an operator paused dispatching: 1 or 0.")
        paused.add_metric([], 1 if snapshot.controls.paused else 0)
        return [up, paused, *self._caps(snapshot.controls.cap), *self._state(snapshot)]

    def _caps(self, override: int | None) -> list[Metric]:
        reading = self._cap(override)
        cap = GaugeMetricFamily(PREFIX + "session_cap", "The global cap on concurrent sessions, by where it "
                                "comes from (NaN while the platform's limit is not known yet).", labels=("source",))
        cap.add_metric([reading.source.value], float("nan") if reading.sessions is None else reading.sessions)
        campaign_cap = GaugeMetricFamily(PREFIX + "campaign_session_cap", "A campaign's own configured cap.",
                                         labels=("campaign",))
        for campaign, value in sorted(self._campaign_caps.items()):
            campaign_cap.add_metric([campaign], value)
        return [cap, campaign_cap]

    def _state(self, snapshot: ClusterSnapshot) -> list[Metric]:
        queue = GaugeMetricFamily(PREFIX + "queue_length", "Requests waiting in the queue (the whole deployment).")
        queue.add_metric([], snapshot.queued)
        sessions = GaugeMetricFamily(PREFIX + "sessions", "Sessions holding a slot: active (the platform session "
                                     "exists) or pending (its platform call is under way).", labels=("state",))
        sessions.add_metric(["active"], snapshot.active)
        sessions.add_metric(["pending"], snapshot.pending)
        campaign_queue = GaugeMetricFamily(PREFIX + "campaign_queue_length", "Requests waiting, per campaign.",
                                           labels=("campaign",))
        campaign_sessions = GaugeMetricFamily(PREFIX + "campaign_sessions", "Sessions holding a slot, per campaign.",
                                              labels=("campaign", "state"))
        seen = {*self._campaigns, *snapshot.queued_by_campaign, *snapshot.active_by_campaign,
                *snapshot.pending_by_campaign}
        for campaign in sorted(seen):
            campaign_queue.add_metric([campaign], snapshot.queued_by_campaign.get(campaign, 0))
            campaign_sessions.add_metric([campaign, "active"], snapshot.active_by_campaign.get(campaign, 0))
            campaign_sessions.add_metric([campaign, "pending"], snapshot.pending_by_campaign.get(campaign, 0))
        return [queue, sessions, campaign_queue, campaign_sessions]
