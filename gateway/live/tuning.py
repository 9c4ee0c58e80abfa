"""The session hub's timers, and what it tells the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from signalr import HubOptions


@dataclass(frozen=True, slots=True, kw_only=True)
class HubTuning:
    """Timers of the session hub (the queue's own limits are in ``Settings.queue``).

    :param position_interval: least seconds between two position rounds (one update per client per second).
    :param poll_interval: most seconds between position rounds while clients wait (a backstop: other processes'
        changes are caught by the change poll).
    :param change_poll: seconds between looks at whether the queue changed (another process's release, a
        leave elsewhere): a few small values, the queue itself is read only when they changed.
    :param reap_interval: seconds between abandonment reaper rounds.
    :param heartbeat_interval: seconds between presence heartbeats; capped at a third of the grace.
    :param hub_options: SignalR endpoint options; ``allowed_origins`` becomes the gateway's CORS policy, and
        ``Instance.Id`` goes before ``connection_id_prefix`` (a worker's ``"0."`` becomes ``"gw1.0."``).
    """

    position_interval: float = 1.0
    poll_interval: float = 5.0
    change_poll: float = 0.2
    reap_interval: float = 2.0
    heartbeat_interval: float = 5.0
    hub_options: HubOptions | None = None


class HubObserver(Protocol):
    """What the session hub tells the metrics (:class:`gateway.metrics.registry.GatewayMetrics`)."""

    def hub_connected(self, transport: str | None, protocol: str | None) -> None: ...
    def hub_disconnected(self, transport: str | None, protocol: str | None) -> None: ...
    def wait_estimate_error(self, seconds: float) -> None: ...  # served: real wait minus first estimate
    def store_error(self, component: str) -> None: ...
