"""``iqra-gateway``: the argument parser and the dispatch to its commands.

Each command is a thin shell around the composition root (:mod:`gateway.app`) or the simulator:
``serve`` (:mod:`gateway.cli.serve`, and :mod:`gateway.cli.workers` for ``--processes``), ``check-config``,
``simulate-platform`` (:mod:`gateway.cli.simulate`) and ``demo`` (:mod:`gateway.cli.demo`). The argument
parser and the process signals live in this package and nowhere else.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from gateway.cli.demo import demo
from gateway.cli.serve import run, serve
from gateway.cli.simulate import simulate
from gateway.cli.workers import serve_processes
from gateway.config import load_settings
from gateway.logs.context import configure_logging
from gateway.logs.throttle import install_repeat_throttle
from gateway.config.errors import ConfigError


def _setup_logging(level: str) -> None:
    configure_logging(getattr(logging, level.upper(), logging.INFO))
    # A Redis outage or a flood repeats one warning per request: one line per kind and interval instead.
    for handler in logging.getLogger().handlers:
        install_repeat_throttle(handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iqra-gateway", description="Web-session gateway for the Iqra AI voice platform.")
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error (default: info)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="path to appsettings.json")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    serve.add_argument("--processes", type=int, default=1,
                       help="worker processes sharing the port (default: 1); more than 1 needs RedisConnectionString")

    check = commands.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", required=True, help="path to appsettings.json")

    sim = commands.add_parser("simulate-platform", help="run a simulated Iqra platform for tests and demos")
    sim.add_argument("--port", type=int, required=True)
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--webhook-url", required=True, help="the gateway's /api/webhook/session-ended URL")
    sim.add_argument("--webhook-token", required=True, help="sent as X-Api-Token with the webhook")
    sim.add_argument("--api-token", default="sim-token", help="the Authorization token the simulator accepts")
    sim.add_argument("--call-seconds", type=float, default=60.0, help="how long each simulated call lasts")

    demo = commands.add_parser("demo", help="gateway plus simulated platform in one process, no Redis needed")
    demo.add_argument("--port", type=int, default=8080, help="gateway port (default: 8080); the simulator uses port+1")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--call-seconds", type=float, default=60.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "serve":
        if args.processes != 1:
            return serve_processes(args)
        return run(serve(args))
    if args.command == "simulate-platform":
        return run(simulate(args))
    if args.command == "demo":
        return run(demo(args))
    return 2  # argparse already rejected anything else


def check_config(path: str) -> int:
    try:
        loaded = load_settings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    for warning in loaded.warnings:
        print(f"warning: {warning}")
    print("OK")
    return 0
