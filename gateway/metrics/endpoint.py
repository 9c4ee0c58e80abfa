"""``GET /metrics``: the Prometheus exposition, on the main port or a port of its own, optionally behind a
bearer token (``Metrics.Port``, ``Metrics.BearerToken``).

A scrape reads this process's metrics (in the multiprocess mode, every worker's, summed), then the
deployment's gauges from Redis (:mod:`gateway.metrics.cluster`), and writes both in the format the scraper
asks for (Prometheus text by default, OpenMetrics when its ``Accept`` says so), with prometheus_client's own
encoders.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator
from typing import Any

import tornado.netutil
import tornado.web
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from tornado.httpserver import HTTPServer

from gateway.config.settings import LimitsSettings, MetricsSettings
from gateway.http.base import JsonHandler
from gateway.http.bearer import bearer_matches
from gateway.http.cors import CorsPolicy
from gateway.http.handlers import NotFoundHandler
from gateway.metrics.cluster import ClusterGauges
from gateway.metrics.registry import GatewayMetrics

METRICS_PATH = "/metrics"
TOKEN_MESSAGE = "Missing or invalid bearer token: send the header \"Authorization: Bearer <Metrics.BearerToken>\"."


class _Families:
    """What prometheus_client's encoders take as a registry: an object whose ``collect()`` yields metrics."""

    def __init__(self, *sources: Iterable[Metric]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield from source


class MetricsHandler(JsonHandler):
    """``GET /metrics``; errors are JSON like every other route's."""

    metrics: GatewayMetrics
    cluster: ClusterGauges
    bearer_token: str

    async def get(self) -> None:
        if self.bearer_token and not bearer_matches(self.request.headers.get("Authorization", ""), self.bearer_token):
            self.send_message(401, TOKEN_MESSAGE, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
            return
        cluster = await self.cluster.collect()
        encoder, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        body = encoder(_Families(self.metrics.collect(), cluster))  # type: ignore[arg-type]
        self.set_header("Content-Type", content_type)
        self.finish(body)


class MetricsEndpoint:
    """Where ``/metrics`` is served: among the main routes, or alone on ``Metrics.Port``.

    :param metrics: this process's metrics.
    :param cluster: the deployment's gauges.
    :param settings: the ``Metrics`` section.
    :param limits: connection timeouts (for the port of its own).
    :param cors: the gateway's CORS policy (every JSON handler takes it).
    """

    def __init__(self, *, metrics: GatewayMetrics, cluster: ClusterGauges, settings: MetricsSettings,
                 limits: LimitsSettings, cors: CorsPolicy) -> None:
        self._settings = settings
        self._limits = limits
        self._cors = cors
        self._routes = [tornado.web.url(METRICS_PATH, MetricsHandler, dict(
            cors=cors, metrics=metrics, cluster=cluster, bearer_token=settings.bearer_token))]
        self._server: HTTPServer | None = None
        self.port: int | None = None

    @property
    def main_routes(self) -> list[Any]:
        """The routes to mount on the main port: none when ``/metrics`` has a port of its own."""
        return [] if self._settings.port is not None else self._routes

    def start(self, *, host: str, sockets: list[socket.socket] | None = None) -> None:
        """Listen on ``Metrics.Port`` (or on ``sockets`` bound for it elsewhere); nothing without a port.

        :raises OSError: the port cannot be bound.
        """
        if self._settings.port is None:
            return
        if sockets is None:
            sockets = tornado.netutil.bind_sockets(self._settings.port, address=host)
        app = tornado.web.Application(self._routes, default_handler_class=NotFoundHandler,
                                      default_handler_args={"cors": self._cors}, log_function=lambda handler: None)
        self._server = HTTPServer(app, idle_connection_timeout=self._limits.keep_alive_timeout_seconds,
                                  body_timeout=self._limits.request_body_timeout_seconds)
        self._server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1] if sockets else None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
