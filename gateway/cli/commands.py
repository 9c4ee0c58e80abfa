"""``iqra-gateway``: the argument parser and the dispatch to its commands.

Each command is a thin shell around the composition root (:mod:`gateway.app`) or the simulator:
``serve`` (:mod:`gateway.cli.serve`, and :mod:`gateway.cli.workers` for ``--processes``), ``check-config``,
``simulate-platform`` (:mod:`gateway.cli.simulate`) and ``demo`` (:mod:`gateway.cli.demo`). The argument
parser and the process signals live in this package and nowhere else.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
from collections.abc import Sequence
from pathlib import Path

from gateway.cli.demo import demo
from gateway.cli.serve import config_report, run, serve
from gateway.cli.simulate import simulate
from gateway.cli.workers import serve_processes
from gateway.config import load_settings
from gateway.config.errors import ConfigError
from gateway.logs.formats import LOG_FORMATS
from gateway.logs.setup import LOG_LEVELS, configure_logging

#: The distribution ``pip`` installs the gateway as.
DISTRIBUTION = "iqra-gateway"


def package_version(distribution: str = DISTRIBUTION) -> str:
    """The installed version; in a source checkout that was never installed, the one its setup.py names."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        pass
    setup_py = Path(__file__).resolve().parents[2] / "setup.py"
    try:
        found = re.search(r'^\s*version\s*=\s*"([^"]+)"', setup_py.read_text(encoding="utf-8"), re.MULTILINE)
    except OSError:
        found = None
    return f"{found.group(1)} (source checkout, not installed)" if found else "unknown (not installed)"


def _output_options(*, top: bool) -> argparse.ArgumentParser:
    """``--log-level`` and ``--log-format``, accepted before the command and after it.

    The copy each command gets has no defaults of its own (``SUPPRESS``), so that a value given before the
    command is not overwritten by the command's default; given in both places, the later one wins.
    """
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--log-level", type=str.lower, choices=tuple(LOG_LEVELS),
                         default="info" if top else argparse.SUPPRESS,
                         help="the least severe records written (default: info)")
    options.add_argument("--log-format", type=str.lower, choices=LOG_FORMATS,
                         default=None if top else argparse.SUPPRESS,
                         help="text lines, or one JSON object per line for log collectors (default: the "
                              "configuration's Logging.Format, else text); wins over the configuration")
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iqra-gateway", description="Web-session gateway for the Iqra AI voice platform.",
                                     parents=[_output_options(top=True)])
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = [_output_options(top=False)]

    serve = commands.add_parser("serve", help="run the gateway", parents=shared)
    serve.add_argument("--config", required=True, help="path to appsettings.json")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    serve.add_argument("--processes", type=int, default=1,
                       help="worker processes sharing the port (default: 1); more than 1 needs RedisConnectionString")

    check = commands.add_parser("check-config", help="validate a configuration file and exit", parents=shared)
    check.add_argument("--config", required=True, help="path to appsettings.json")

    sim = commands.add_parser("simulate-platform", help="run a simulated Iqra platform for tests and demos",
                              parents=shared)
    sim.add_argument("--port", type=int, required=True)
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--webhook-url", required=True, help="the gateway's /api/webhook/session-ended URL")
    sim.add_argument("--webhook-token", required=True, help="sent as X-Api-Token with the webhook")
    sim.add_argument("--api-token", default="sim-token", help="the Authorization token the simulator accepts")
    sim.add_argument("--call-seconds", type=float, default=60.0, help="how long each simulated call lasts")

    demo = commands.add_parser("demo", help="gateway plus simulated platform in one process, no Redis needed",
                               parents=shared)
    demo.add_argument("--port", type=int, default=8080, help="gateway port (default: 8080); the simulator uses port+1")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--call-seconds", type=float, default=60.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
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
    """Print every problem and every warning of the file, then ``OK`` when it can be served; 1 if not."""
    try:
        loaded = load_settings(path)
    except ConfigError as exc:
        for line in config_report(exc.problems, exc.warnings):
            print(line)
        return 1
    for line in config_report((), loaded.warnings):
        print(line)
    print("OK")
    return 0
