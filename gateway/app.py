"""The composition root: builds every service from one :class:`Settings` and wires the Tornado app.

Nothing is created at import time. :class:`Gateway` owns the Redis client, the platform client, the
dispatcher and the HTTP server for one process; tests build one per server with their own settings,
clock and (optionally) Redis client.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
import tornado.httputil
import tornado.netutil
import tornado.web

from gateway.http.admin import admin_routes
from gateway.admin.service import AdminService
from gateway.admission.control import ControlStore
from gateway.admission.snapshot import SnapshotReader
from gateway.admission.store import AdmissionStore
from gateway.admission.keys import KeySpace
from gateway.queue.capacity import CapacityPolicy, PlatformCapacitySync
from gateway.http.cors import CorsPolicy
from gateway.queue.dispatcher import QueueDispatcher
from gateway.http.dashboard import dashboard_routes
from gateway.http.docs import docs_routes
from gateway.http.edge import EdgeServer, open_file_limit_warning
from gateway.admission.epoch import CHECK_INTERVAL_SECONDS, EpochWatcher, StoreEpoch
from gateway.queue.events import EventHub
from gateway.http.handlers import (
    ForbiddenOriginHandler,
    HealthHandler,
    NotFoundHandler,
    ReadyHandler,
    SessionEndedHandler,
    SessionLeaveHandler,
    SessionRequestDeleteHandler,
    SessionRequestHandler,
    SessionStatusHandler,
    request_id_of,
)
from gateway.http.inflight import InflightRequests
from gateway.metrics.cluster import ClusterGauges
from gateway.queue.capacity import capacity_reading
from gateway.metrics.endpoint import MetricsEndpoint
from gateway.metrics.registry import GatewayMetrics
from gateway.metrics.totals import dashboard_totals
from gateway.platform.client import PlatformClient
from gateway.queue.protection import ClientProtection
from gateway.live.hub import HUB_PATH, HubTuning, SessionHubService
from gateway.live.presence import PresenceStore
from gateway.queue.serving import SessionServing
from gateway.queue.service import SessionService
from gateway.config.settings import Settings
from signalr.hubs.lifetime import HubLifetimeManager
from signalr.redis.lifetime import RedisHubLifetimeManager
from signalr.redis.protocol import BackplaneLayout
from gateway.config.redis_cluster import is_cluster_url, parse_cluster_url
from gateway.config.redis_sentinel import is_sentinel_url, parse_sentinel_url
from gateway.redis import cluster as redis_cluster
from gateway.redis import sentinel as redis_sentinel
from gateway.redis.client import check_redis_version, open_redis
from gateway.redis.replication import ReplicaWait
from geo.client_ip import TrustedProxies, resolve_client_address

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")

NEGOTIATE_PATH = HUB_PATH + "/negotiate"


def _log_request(handler: tornado.web.RequestHandler, proxies: TrustedProxies) -> None:
    status = handler.get_status()
    level = logging.INFO if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return  # a quiet access log costs the request nothing
    request = handler.request
    millis = 1000.0 * request.request_time()
    # Behind a load balancer (ForwardedHeaders), the visitor's address rather than the balancer's.
    client_ip = request.remote_ip or ""
    if proxies.enabled:
        headers = request.headers
        client_ip = resolve_client_address(client_ip, headers.get_list("X-Forwarded-For"), (), proxies).ip or client_ip
    # The same facts as fields of their own, so that a JSON log collector can filter on them.
    fields = {"status": status, "method": request.method, "path": request.path, "duration_ms": round(millis, 1),
              "client_ip": client_ip}
    access_log.log(level, "%d %s %s %.1fms ip=%s request=%s", status, request.method, request.uri, millis,
                   client_ip, request_id_of(request), extra=fields)


#: The backplane's group-command ack timeout and socket timeout (its default), for its sentinel clients too.
BACKPLANE_TIMEOUT = 5.0
#: The longest wait between two attempts to subscribe again (the library's default is 5 s): outcomes missed
#: meanwhile are only sent once it is back (gateway.live.resync), so a visitor served during a failover
#: would wait that much longer. One attempt a second per process costs a down Redis nothing.
BACKPLANE_RECONNECT_MAX_SECONDS = 1.0


def key_space(settings: Settings) -> KeySpace:
    """Every Redis name of this gateway, under its one prefix (hash-tagged on a Redis Cluster)."""
    return KeySpace.for_store(cluster=is_cluster_url(settings.redis_url), name=settings.redis.key_prefix)


def _hub_lifetime(settings: Settings, keys: KeySpace) -> HubLifetimeManager | None:
    """The hub's lifetime manager: the Redis backplane when several processes share a Redis, else the
    in-memory one (the embedded store is for one process only).

    The backplane's layout is the shared one: a waiting client's connect and ``Register`` then cost no
    ``SUBSCRIBE`` each (a crowd arriving at once is thousands of them), while the only sends that cross
    processes are outcomes, one per served client, which every process reads and filters cheaply."""
    url = settings.redis_url
    if not url:
        return None
    common: dict[str, Any] = {"prefix": keys.backplane, "hub_name": "sessionHub", "layout": BackplaneLayout.SHARED,
                              "reconnect_max_delay": BACKPLANE_RECONNECT_MAX_SECONDS}
    # Its log lines name the URL: without credentials.
    if is_sentinel_url(url):
        # Its clients find the primary through the sentinels, and find it again after a failover.
        target = replace(parse_sentinel_url(url), username=None, password=None, sentinel_password=None)
        return RedisHubLifetimeManager(target.url(), **common, ack_timeout=BACKPLANE_TIMEOUT,
                                       redis_factory=redis_sentinel.backplane_factory(url, timeout=BACKPLANE_TIMEOUT))
    if is_cluster_url(url) and keys.hash_tag:
        # Sharded pub/sub on the node owning the keys' slot: a plain PUBLISH would go to every node.
        shown = replace(parse_cluster_url(url), username=None, password=None)
        return RedisHubLifetimeManager(shown.url(), **common, ack_timeout=BACKPLANE_TIMEOUT, sharded=True,
                                       redis_factory=redis_cluster.backplane_factory(
                                           url, hash_tag=keys.hash_tag, timeout=BACKPLANE_TIMEOUT))
    return RedisHubLifetimeManager(url, **common)


class Gateway:
    """One gateway process: services, HTTP app and server.

    :param hub_tuning: timers of the ``/sessionHub`` live queue (:class:`gateway.live.hub.HubTuning`).
    :param epoch_interval: seconds between checks that the store was not reset (:mod:`gateway.admission.epoch`).
    :param hand_over: called with each request once its head is read; returns True when it passed the
        request's connection to another process (then this one serves nothing more of it). The
        ``--processes`` workers pass on requests naming another worker's SignalR connection
        (:class:`gateway.cli.handover.Handover`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redis: aioredis.Redis | None = None,
        platform: PlatformClient | None = None,
        clock: Callable[[], float] = time.time,
        dispatch_interval: float = 1.0,
        hub_tuning: HubTuning | None = None,
        hand_over: Callable[[tornado.httputil.HTTPServerRequest], bool] | None = None,
        epoch_interval: float = CHECK_INTERVAL_SECONDS,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.hand_over = hand_over
        self.keys = key_space(settings)
        self.redis = redis if redis is not None else open_redis(settings.redis_url, hash_tag=self.keys.hash_tag)
        self._owns_redis = redis is None
        self.metrics = GatewayMetrics()
        self.platform = platform if platform is not None else PlatformClient(settings.platform,
                                                                             observer=self.metrics.platform_call)
        self.events = EventHub()
        self.events.subscribe(self.metrics.on_event)
        self._build_queue(settings, clock=clock, dispatch_interval=dispatch_interval, epoch_interval=epoch_interval)
        self.trusted_proxies = TrustedProxies.parse(settings.forwarded_headers.known_proxies,
                                                    settings.forwarded_headers.known_networks)
        self.cors = CorsPolicy(settings.allowed_origins)
        self.metrics_endpoint = self._build_metrics_endpoint(settings)
        self.inflight = InflightRequests()
        self.server: EdgeServer | None = None
        self.port: int | None = None
        # Extension points for features mounted on the gateway (the SignalR session hub, the demo page):
        # they add routes and lifecycle steps without the composition root knowing their internals.
        self._extra_routes: list[Any] = []
        self._on_start: list[Callable[[], Awaitable[None]]] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self.on_start(self.epoch.start)
        self.on_start(self._start_capacity_sync)
        self.on_stop(self.capacity_sync.stop)
        self.on_stop(self.epoch.stop)
        self._build_live_queue(settings, clock=clock, hub_tuning=hub_tuning)
        self._build_admin(settings, clock=clock)

    def _build_queue(self, settings: Settings, *, clock: Callable[[], float], dispatch_interval: float,
                     epoch_interval: float) -> None:
        """The admission store and the use cases on it: protection, the serving path, the dispatcher, the
        capacity (configured or synced from the platform), the session service."""
        # The deployment's epoch: admissions and claims carry it, so none runs against a store that was
        # reset (restarted empty, flushed) before this process has caught up (gateway.admission.epoch).
        store_epoch = StoreEpoch(self.redis, key=self.keys.admission.epoch)
        self.epoch = EpochWatcher(store_epoch, interval=epoch_interval,
                                  on_store_error=lambda: self.metrics.store_error("epoch"))
        replicas = settings.redis.wait_for_replicas
        self.replica_wait = ReplicaWait(replicas, settings.redis.wait_timeout_ms) if replicas else None
        self.store = AdmissionStore(self.redis, key_prefix=self.keys.prefix, clock=clock, epoch=lambda: store_epoch.known,
                                    replica_wait=self.replica_wait)
        campaign_caps = {name: c.max_concurrent_sessions for name, c in settings.platform.campaigns.items()
                         if c.max_concurrent_sessions is not None}
        self.capacity = CapacityPolicy(global_cap=settings.concurrency.max_concurrent_sessions,
                                       campaign_caps=campaign_caps)
        self.protection = ClientProtection(settings, self.redis, clock=clock, key_prefix=self.keys.rate_limits)
        # One serving path (the platform call, the requeue, the recording) for direct admissions and the queue.
        serving = SessionServing(store=self.store, platform=self.platform, settings=settings,
                                 protection=self.protection)
        self.dispatcher = QueueDispatcher(store=self.store, serving=serving, settings=settings,
                                          capacity=self.capacity, events=self.events,
                                          interval=dispatch_interval, on_store_reset=self.epoch.check_now)
        self.capacity_sync = PlatformCapacitySync(platform=self.platform, store=self.store, capacity=self.capacity,
                                                  interval=settings.concurrency.sync_interval_seconds,
                                                  grew=self.dispatcher.kick,
                                                  on_store_error=lambda: self.metrics.store_error("capacity"))
        # First after a reset: the cap stops counting the sessions the store forgot as free slots.
        self.epoch.on_reset(self.capacity_sync.after_store_reset)
        self.service = SessionService(settings=settings, store=self.store, serving=serving,
                                      capacity=self.capacity, dispatcher=self.dispatcher, events=self.events,
                                      protection=self.protection, on_store_reset=self.epoch.check_now)

    def _build_live_queue(self, settings: Settings, *, clock: Callable[[], float],
                          hub_tuning: HubTuning | None) -> None:
        """The live queue: presence (shared by the hub and the status endpoint: a poll is a sign of life)
        and the session hub, mounted and told about outcomes and store resets."""
        self.presence = PresenceStore(self.redis, admission=self.store, key_prefix=self.keys.presence, clock=clock)
        self.session_hub = SessionHubService(
            settings, store=self.store, sessions=self.service, presence=self.presence, clock=clock,
            origin_allowed=self.cors.allows, lifetime=_hub_lifetime(settings, self.keys), tuning=hub_tuning,
            observer=self.metrics)
        self.add_routes(self.session_hub.routes)
        self.add_routes(self.metrics_endpoint.main_routes)
        self.on_start(self.session_hub.start)
        self.on_stop(self.session_hub.stop)
        self.events.subscribe(self.session_hub.on_event)
        self.epoch.on_reset(self.session_hub.store_reset)

    def _build_admin(self, settings: Settings, *, clock: Callable[[], float]) -> None:
        """The admin API (mounted only with ``Admin.ApiToken``): the operators' controls and the deployment's
        snapshot, both in the store, so every process sees a change at once."""
        self.controls = ControlStore(self.redis, keys=self.store.keys, audit_key=self.keys.admin_audit, clock=clock)
        snapshots = SnapshotReader(self.redis, keys=self.store.keys, registered_key=self.presence.keys.registered,
                                   session_lease_seconds=settings.concurrency.session_lease_seconds, clock=clock)
        self.admin = AdminService(controls=self.controls, snapshots=snapshots, sessions=self.service,
                                  capacity=self.capacity, wake_dispatcher=self.dispatcher.kick)

    def _build_metrics_endpoint(self, settings: Settings) -> MetricsEndpoint:
        """``/metrics``: this process's metrics (every worker's, under ``--processes``) and the deployment's
        gauges, read from the store once per scrape."""
        cluster = ClusterGauges(redis=self.redis, keys=self.store.keys, campaigns=settings.platform.campaigns,
                                campaign_caps=self.capacity.caps().campaign_caps,
                                cap=lambda override: capacity_reading(self.capacity, override),
                                on_store_error=lambda: self.metrics.store_error("metrics"))
        return MetricsEndpoint(metrics=self.metrics, cluster=cluster, settings=settings.metrics,
                               limits=settings.limits, cors=self.cors)

    async def _start_capacity_sync(self) -> None:
        self.capacity_sync.start()

    def add_routes(self, routes: list[Any]) -> None:
        """Mount more routes (before :meth:`start`); they take precedence over the REST routes."""
        self._extra_routes.extend(routes)

    def on_start(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` at start-up, before the server accepts connections."""
        self._on_start.append(step)

    def on_stop(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` at shutdown, after the server stopped accepting and before in-flight requests are
        awaited (a SignalR hub closes its long-lived connections here)."""
        self._on_stop.append(step)

    def routes(self) -> list[tornado.web.URLSpec]:
        common = {"cors": self.cors}
        observed = {"cors": self.cors, "observer": self.metrics}  # what they answer is counted
        return [
            tornado.web.url(r"/api/session/request", SessionRequestHandler,
                            dict(observed, service=self.service, campaigns=self.settings.platform.campaigns,
                                 trusted_proxies=self.trusted_proxies)),
            tornado.web.url(r"/api/session/status/([^/]+)", SessionStatusHandler,
                            dict(observed, service=self.service, poll_presence=self.presence.register)),
            tornado.web.url(r"/api/session/leave/([^/]+)", SessionLeaveHandler, dict(observed, service=self.service)),
            tornado.web.url(r"/api/session/request/([^/]+)", SessionRequestDeleteHandler,
                            dict(observed, service=self.service)),
            tornado.web.url(r"/api/webhook/session-ended", SessionEndedHandler,
                            dict(observed, service=self.service,
                                 webhook_token=self.settings.security.webhook_api_token)),
            tornado.web.url(r"/healthz", HealthHandler, common),
            tornado.web.url(r"/readyz", ReadyHandler, dict(common, store=self.store)),
            # The API contract (GET /openapi.json) and its rendering (/docs).
            *docs_routes(cors=self.cors),
            # The operators' API, mounted only when Admin.ApiToken is set.
            *admin_routes(admin=self.admin, token=self.settings.admin.api_token, trusted_proxies=self.trusted_proxies,
                          totals=lambda: dashboard_totals(self.metrics.collect()),
                          on_store_error=lambda: self.metrics.store_error("admin")),
            *dashboard_routes(cors=self.cors),  # the live dashboard at /admin, on the admin API
        ]

    def make_app(self, extra_routes: list[Any] | None = None) -> tornado.web.Application:
        inflight = self.inflight
        hand_over = self.hand_over
        cors = self.cors
        proxies = self.trusted_proxies

        class _Tracked(tornado.web.Application):
            # Counting here (rather than in each handler) covers every route, including SignalR's. A
            # request whose client leaves before it was fully received ends in the EdgeServer instead.
            def log_request(self, handler: tornado.web.RequestHandler) -> None:
                inflight.finished(handler.request.connection)
                _log_request(handler, proxies)

            def find_handler(self, request, **kwargs):  # type: ignore[no-untyped-def]
                if hand_over is not None and hand_over(request):
                    return tornado.httputil.HTTPMessageDelegate()  # the connection is detached: nothing to do
                inflight.started(request.connection)
                if (request.method == "POST" and request.path == NEGOTIATE_PATH
                        and cors.refuses(request.headers.get("Origin"))):
                    # The SignalR library only hides answers from foreign origins; a negotiate is the
                    # first step of a hub connection made with the visitor's IP, so it is refused here.
                    return self.get_handler_delegate(request, ForbiddenOriginHandler, {"cors": cors})
                return super().find_handler(request, **kwargs)

        return _Tracked(
            [*(extra_routes or []), *self._extra_routes, *self.routes()],
            default_handler_class=NotFoundHandler,
            default_handler_args={"cors": self.cors},
        )

    async def start(self, *, port: int = 0, host: str = "127.0.0.1",
                    sockets: list[socket.socket] | None = None, extra_routes: list[Any] | None = None,
                    metrics_sockets: list[socket.socket] | None = None) -> int:
        """Start the dispatcher and listen; returns the bound port.

        :param metrics_sockets: bound for ``Metrics.Port`` elsewhere (the ``--processes`` supervisor);
            by default the port is bound on ``host`` here, when it is set.
        :raises ConfigError: when the Redis is too old for the scripts.
        :raises OSError: when a port cannot be bound.
        """
        await check_redis_version(self.redis)
        for step in self._on_start:
            await step()
        self.dispatcher.start()
        self.protection.start(self.store.keys.entries)
        app = self.make_app(extra_routes)
        self.server = EdgeServer(app, limits=self.settings.limits, inflight=self.inflight, xheaders=False,
                                 ipv6_prefix_length=self.settings.security.ipv6_prefix_length)
        warning = open_file_limit_warning(self.settings.limits)
        if warning:
            log.warning("%s", warning)
        if sockets is None:
            sockets = tornado.netutil.bind_sockets(port, address=host)
        self.metrics_endpoint.start(host=host, sockets=metrics_sockets)
        self.server.add_sockets(sockets)
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return self.port if self.port is not None else port

    def accept_socket(self, sock: socket.socket) -> None:
        """Serve a client connection accepted elsewhere (the ``--processes`` front hands them over)."""
        assert self.server is not None, "start() first"
        try:
            address = sock.getpeername()
        except OSError:
            sock.close()
            return
        # Through the same door as the server's own accepts: counted against Limits, timed out alike.
        self.server.serve_socket(sock, address)

    async def stop(self, *, grace: float = 10.0) -> None:
        """Stop accepting, finish in-flight requests (up to ``grace`` s), then release everything."""
        if self.server is not None:
            # Before the hub tells its clients to reconnect: their reconnect must not come back here
            # on a connection a load balancer keeps open to this instance.
            self.server.stop()
        await self.metrics_endpoint.stop()
        for step in reversed(self._on_stop):
            try:
                await step()
            except Exception:  # one failing step must not keep the rest from releasing resources
                log.exception("shutdown step %r failed", step)
        if self.server is not None:
            if not await self.inflight.wait_idle(grace):
                log.warning("shutting down with %d request(s) still in flight", self.inflight.count)
            await self.server.close_all_connections()
            await self.server.close_lingering()
        if not await self.service.settle(grace):
            log.warning("shutting down with failed requests not yet withdrawn; the register timeout removes them")
        await self.dispatcher.stop()
        await self.protection.stop()
        self.protection.close()
        self.platform.close()
        if self._owns_redis:
            await self.redis.aclose()
