"""``iqra-gateway``: serve, check-config, simulate-platform and demo.

Each command is a thin shell around the composition root (:mod:`gateway.app`) or the simulator; the
argument parser and the process signals live here and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
from collections.abc import Sequence

from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.logcontext import configure_logging

log = logging.getLogger("gateway")


def _setup_logging(level: str) -> None:
    configure_logging(getattr(logging, level.upper(), logging.INFO))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iqra-gateway", description="Web-session gateway for the Iqra AI voice platform.")
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error (default: info)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="path to appsettings.json")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: 0.0.0.0)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")

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
        return _check_config(args.config)
    if args.command == "serve":
        return _run(_serve(args))
    if args.command == "simulate-platform":
        return _run(_simulate(args))
    if args.command == "demo":
        return _run(_demo(args))
    return 2  # argparse already rejected anything else


def _check_config(path: str) -> int:
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


def _run(coro) -> int:  # type: ignore[no-untyped-def]
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve(args: argparse.Namespace) -> int:
    from gateway.app import Gateway

    try:
        loaded = load_settings(args.config)
    except ConfigError as exc:
        print("The configuration has problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        log.warning("config: %s", warning)
    gateway = Gateway(loaded.settings)
    port = await gateway.start(port=args.port, host=args.host)
    log.info("iqra-gateway listening on http://%s:%d", args.host, port)
    await _wait_for_signal()
    log.info("shutting down: no new connections, finishing in-flight requests")
    await gateway.stop()
    return 0


async def _simulate(args: argparse.Namespace) -> int:
    from gateway.simulator import serve_simulator

    runner = await serve_simulator(port=args.port, host=args.host, webhook_url=args.webhook_url,
                                   webhook_token=args.webhook_token, call_seconds=args.call_seconds,
                                   api_token=args.api_token)
    log.info("simulated platform listening on http://%s:%d/api/v1/", args.host, args.port)
    await _wait_for_signal()
    await _maybe_close(runner)
    return 0


async def _maybe_close(obj: object) -> None:
    close = getattr(obj, "close", None) or getattr(obj, "stop", None)
    if close is not None:
        result = close()
        if asyncio.iscoroutine(result):
            await result


def demo_settings(*, gateway_port: int, simulator_port: int, api_token: str, webhook_token: str):  # type: ignore[no-untyped-def]
    """The built-in demo configuration: campaign ``DemoCampaign``, region ``local``, global cap 2."""
    from gateway.config import load_settings as _load

    data = {
        "AllowedOrigins": [f"http://127.0.0.1:{gateway_port}", f"http://localhost:{gateway_port}"],
        "VoiceAiPlatform": {
            "ApiSecretToken": api_token,
            "BaseUrl": f"http://127.0.0.1:{simulator_port}/api/v1/",
            "Campaigns": {"DemoCampaign": {"BusinessId": "1", "WebCampaignId": "demo-web-campaign",
                                           "AllowedRegionIds": ["local"]}},
        },
        "Security": {"WebhookApiToken": webhook_token},
        "Concurrency": {"MaxConcurrentSessions": 2},
    }
    return _load(data=data, environ={}).settings


async def _demo(args: argparse.Namespace) -> int:
    from gateway.app import Gateway
    from gateway.simulator import serve_simulator

    api_token = "demo-" + secrets.token_urlsafe(12)
    webhook_token = "demo-" + secrets.token_urlsafe(12)
    sim_port = args.port + 1
    settings = demo_settings(gateway_port=args.port, simulator_port=sim_port, api_token=api_token,
                             webhook_token=webhook_token)
    runner = await serve_simulator(port=sim_port, host=args.host,
                                   webhook_url=f"http://{args.host}:{args.port}/api/webhook/session-ended",
                                   webhook_token=webhook_token, call_seconds=args.call_seconds, api_token=api_token)
    gateway = Gateway(settings)
    await gateway.start(port=args.port, host=args.host)
    base = f"http://{args.host}:{args.port}"
    print(f"iqra-gateway demo (embedded store, simulated platform; campaign DemoCampaign, region local, cap 2)")
    print(f"  gateway:            {base}/")
    print(f"  session request:    POST {base}/api/session/request")
    print(f"  queue status:       GET  {base}/api/session/status/<uniqueRequestId>")
    print(f"  webhook:            POST {base}/api/webhook/session-ended")
    print(f"  simulated platform: http://{args.host}:{sim_port}/api/v1/  (control: http://{args.host}:{sim_port}/_sim/calls)")
    print("Press Ctrl+C to stop.", flush=True)
    await _wait_for_signal()
    await gateway.stop()
    await _maybe_close(runner)
    return 0
