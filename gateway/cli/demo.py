"""``iqra-gateway demo``: the gateway and a simulated platform in one process, on the embedded store."""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import TYPE_CHECKING

from gateway.cli.serve import stop_on_signal
from gateway.cli.simulate import close_runner

if TYPE_CHECKING:
    from gateway.config.settings import Settings


def demo_settings(*, gateway_port: int, simulator_port: int, api_token: str, webhook_token: str,
                  admin_token: str) -> Settings:
    """The built-in demo configuration: campaign ``DemoCampaign``, region ``local``, global cap 2, the admin
    API on with ``admin_token`` (a fresh one each run, printed for the dashboard)."""
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
        "Admin": {"ApiToken": admin_token},
    }
    return _load(data=data, environ={}).settings


async def demo(args: argparse.Namespace) -> int:
    from gateway.app import Gateway
    from gateway.cli.demo_api import demo_routes
    from simulator.app import serve_simulator
    from gateway.http.static_site import static_routes

    api_token = "demo-" + secrets.token_urlsafe(12)
    webhook_token = "demo-" + secrets.token_urlsafe(12)
    admin_token = secrets.token_urlsafe(18)
    webhook_url = f"http://{args.host}:{args.port}/api/webhook/session-ended"
    try:
        runner = await serve_simulator(port=args.port + 1, host=args.host, webhook_url=webhook_url,
                                       webhook_token=webhook_token, call_seconds=args.call_seconds, api_token=api_token)
    except OSError:
        # The next port is taken: any free one will do, the gateway is told which.
        runner = await serve_simulator(port=0, host=args.host, webhook_url=webhook_url,
                                       webhook_token=webhook_token, call_seconds=args.call_seconds, api_token=api_token)
    sim_port = runner.port
    settings = demo_settings(gateway_port=args.port, simulator_port=sim_port, api_token=api_token,
                             webhook_token=webhook_token, admin_token=admin_token)
    gateway = Gateway(settings)
    gateway.add_routes([*static_routes(demo=True),
                        *demo_routes(gateway, simulator_url=f"http://{args.host}:{sim_port}")])
    try:
        await gateway.start(port=args.port, host=args.host)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; choose another --port", file=sys.stderr)
        await close_runner(runner)
        return 1
    # The handlers first: a supervisor that reads the ready lines and stops the demo at once must not find
    # it still on Python's default SIGINT/SIGTERM behaviour.
    stop = stop_on_signal()
    base = f"http://{args.host}:{args.port}"
    print("iqra-gateway demo (embedded store, simulated platform; campaign DemoCampaign, region local, cap 2)")
    print(f"  demo page:          {base}/   (open it in a browser and press Call)")
    print(f"  session request:    POST {base}/api/session/request")
    print(f"  queue status:       GET  {base}/api/session/status/<uniqueRequestId>")
    print(f"  webhook:            POST {base}/api/webhook/session-ended")
    print(f"  admin dashboard:    {base}/admin   (token: {admin_token})")
    print(f"  API contract:       {base}/docs")
    print(f"  simulated platform: http://{args.host}:{sim_port}/api/v1/  (control: http://{args.host}:{sim_port}/_sim/calls)")
    print("Press Ctrl+C to stop.", flush=True)
    await stop.wait()
    await gateway.stop()
    await close_runner(runner)
    return 0
