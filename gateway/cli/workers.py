"""``iqra-gateway serve --processes N``: the supervisor in the parent, a gateway in each worker."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

from gateway.cli.serve import build_gateway, load_for_serve, run, settle_heap, wait_for_signal
from gateway.logs.throttle import flush_repeat_throttles
from gateway.config.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config.settings import Settings

log = logging.getLogger("gateway")

#: Why --processes needs Redis, as printed at start-up.
EMBEDDED_MULTI_PROCESS_ERROR = (
    "--processes {n} needs a shared Redis: the embedded store lives inside one process, so {n} workers "
    "would each have their own queue and slots. Set RedisConnectionString, or use --processes 1.")


def serve_processes(args: argparse.Namespace) -> int:
    import socket as _socket

    import tornado.netutil

    from gateway.cli.supervisor import Supervisor
    from gateway.metrics.processes import WorkerMetricsDir

    if args.processes < 1:
        print("--processes must be at least 1", file=sys.stderr)
        return 2
    settings = load_for_serve(args.config)
    if settings is None:
        return 1
    if not settings.redis_url:
        print(EMBEDDED_MULTI_PROCESS_ERROR.format(n=args.processes), file=sys.stderr)
        return 2
    family = _socket.AF_INET6 if ":" in args.host else _socket.AF_INET
    listener = tornado.netutil.bind_sockets(args.port, address=args.host, family=family)[0]
    # Metrics.Port: one listening socket, inherited by every worker; any of them can answer a scrape,
    # since each reads every worker's metrics.
    metrics_sockets = (tornado.netutil.bind_sockets(settings.metrics.port, address=args.host, family=family)
                       if settings.metrics.port is not None else None)
    log.info("iqra-gateway listening on http://%s:%d with %d worker processes",
             args.host, listener.getsockname()[1], args.processes)
    # Before any worker exists, and before anything imports prometheus_client (gateway.metrics.processes).
    with WorkerMetricsDir() as metrics_dir:
        def worker(index: int, channel: _socket.socket) -> int:
            return run(serve_worker(settings, index, channel, workers=args.processes, metrics_sockets=metrics_sockets))

        return Supervisor(listener, args.processes, worker, on_worker_exit=metrics_dir.worker_exited,
                          instance_prefix=settings.instance.token_prefix).run()


async def serve_worker(settings: Settings, index: int, channel: Any, *, workers: int,
                       metrics_sockets: list[Any] | None = None) -> int:
    from gateway.cli.handover import Handover
    from gateway.cli.supervisor import receive, token_prefix
    from gateway.live.hub import HubTuning
    from signalr import HubOptions

    channel.setblocking(False)
    handover = Handover(index, workers, channel, instance_prefix=settings.instance.token_prefix)
    # Every SignalR connection id and token of this worker names it, so the front and the other workers
    # pass each request to the worker that holds its connection (after Instance.Id, which the hub adds).
    tuning = HubTuning(hub_options=HubOptions(connection_id_prefix=token_prefix(index)))
    gateway = build_gateway(settings, hand_over=handover, hub_tuning=tuning)
    if gateway is None:
        return 1
    try:
        await gateway.start(sockets=[], metrics_sockets=metrics_sockets)
    except ConfigError as exc:
        print(f"worker {index}: " + "; ".join(exc.problems), file=sys.stderr)
        await gateway.stop()
        return 1
    settle_heap()
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()

    def on_readable() -> None:
        try:
            # What the parent sent since the last wake-up (a crowd arrives in bursts), a bounded batch.
            for _ in range(64):
                arrivals = receive(channel)
                if not arrivals:
                    break
                for arrival in arrivals:
                    handover.serve(gateway.server, arrival)
        except EOFError:  # the supervisor is gone: shut down
            loop.remove_reader(channel.fileno())
            closed.set()

    loop.add_reader(channel.fileno(), on_readable)
    waits = {asyncio.ensure_future(wait_for_signal()), asyncio.ensure_future(closed.wait())}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    loop.remove_reader(channel.fileno())
    log.info("worker %d shutting down", index)
    await gateway.stop()
    # Workers end with os._exit, which runs no exit hooks: write what the log throttle still counts.
    flush_repeat_throttles()
    return 0
