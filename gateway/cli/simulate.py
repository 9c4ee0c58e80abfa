"""``iqra-gateway simulate-platform``: the simulated Iqra platform on its own, for tests and demos."""

from __future__ import annotations

import argparse
import asyncio
import logging

from gateway.cli.serve import stop_on_signal

log = logging.getLogger("gateway")


async def simulate(args: argparse.Namespace) -> int:
    from simulator.app import serve_simulator

    runner = await serve_simulator(port=args.port, host=args.host, webhook_url=args.webhook_url,
                                   webhook_token=args.webhook_token, call_seconds=args.call_seconds,
                                   api_token=args.api_token)
    stop = stop_on_signal()  # before the ready line, as for serve and demo
    log.info("simulated platform listening on http://%s:%d/api/v1/", args.host, args.port)
    await stop.wait()
    await close_runner(runner)
    return 0


async def close_runner(obj: object) -> None:
    """Stop what ``serve_simulator`` started, whichever way it closes."""
    close = getattr(obj, "close", None) or getattr(obj, "stop", None)
    if close is not None:
        result = close()
        if asyncio.iscoroutine(result):
            await result
