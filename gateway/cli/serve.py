"""``iqra-gateway serve`` in one process, and the process plumbing every command shares: running a
command's coroutine, waiting for SIGTERM/SIGINT, loading the configuration for a server, and building the
gateway with the widget's static files."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gateway.config import load_settings
from gateway.config.errors import ConfigError
from gateway.logs.setup import adopt_configured_format, writes_json

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.config.settings import Settings

log = logging.getLogger("gateway")


def run(coro: Any) -> int:
    """Run a command's coroutine to its exit code; Ctrl+C is 130, as for any interrupted command."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130


def stop_on_signal() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, which no longer end the process at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_for_signal() -> None:
    """Until SIGTERM or SIGINT."""
    await stop_on_signal().wait()


def config_report(problems: Iterable[str], warnings: Iterable[str]) -> list[str]:
    """One line per problem (``error: ...``) and per warning (``warning: ...``), problems first."""
    return [*(f"error: {problem}" for problem in problems), *(f"warning: {warning}" for warning in warnings)]


def report_config_error(exc: ConfigError) -> None:
    """Say why the gateway does not start: every problem, and the warnings found with them."""
    if writes_json():  # a log collector reads stderr: records, not free text
        for problem in exc.problems:
            log.error("config: " + problem)  # each its own message: the repeat throttle must not fold them
        for warning in exc.warnings:
            log.warning("config: " + warning)
        log.error("the configuration has problems; not starting")
        return
    print("The configuration has problems:", file=sys.stderr)
    for line in config_report(exc.problems, exc.warnings):
        print(f"  {line}", file=sys.stderr)


def load_for_serve(path: str) -> Settings | None:
    """The settings to serve with, or None after printing every problem and warning."""
    try:
        loaded = load_settings(path)
    except ConfigError as exc:
        report_config_error(exc)
        return None
    adopt_configured_format(loaded.settings.logging.format)
    for warning in loaded.warnings:
        # Not "config: %s": every warning would be one kind to the repeat throttle, and only the first shown.
        log.warning("config: " + warning)
    return loaded.settings


#: Net container allocations between two young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Move everything built at start-up out of the garbage collector's way.

    The modules, settings, scripts and routes live as long as the process; freezing them means the
    collector's full passes, which otherwise walk them again and again under load, only look at what
    requests create (measured: about 6% less CPU per admission request). Nearly everything a request
    creates is freed by reference counting when it ends, but with 700 as the threshold the requests in
    flight at once outnumber it, so young collections ran every few requests, each walking the live
    requests' objects again for nothing (3% of the queued path's CPU). At 10,000 they are rare; the
    garbage cycles that do form wait a little longer, a few hundred kilobytes at most.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def build_gateway(settings: Settings, **kwargs: Any) -> Gateway | None:
    """The composition root plus the widget's static files; None (after saying why) when a MaxMind
    database named in the settings cannot be opened."""
    from gateway.app import Gateway
    from gateway.http.static_site import static_routes
    from geo.errors import GeoDatabaseError

    try:
        gateway = Gateway(settings, **kwargs)
    except GeoDatabaseError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return None
    gateway.add_routes(static_routes(demo=False))
    return gateway


async def serve(args: argparse.Namespace) -> int:
    settings = load_for_serve(args.config)
    if settings is None:
        return 1
    gateway = build_gateway(settings)
    if gateway is None:
        return 1
    try:
        port = await gateway.start(port=args.port, host=args.host)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; choose another --port", file=sys.stderr)
        return 1
    except ConfigError as exc:
        report_config_error(exc)
        await gateway.stop()
        return 1
    settle_heap()
    # Before saying so: a supervisor may send SIGTERM as soon as it reads the line, and must get a clean stop.
    stop = stop_on_signal()
    # On stdout as well as in the log, so scripts and supervisors can wait for it.
    print(f"iqra-gateway listening on http://{args.host}:{port}", flush=True)
    await stop.wait()
    log.info("shutting down: no new connections, finishing in-flight requests")
    await gateway.stop()
    return 0
