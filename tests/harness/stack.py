"""A whole gateway stack in the test's event loop: gateway + platform simulator, on free ports.

Both run as real Tornado servers on loopback and talk real HTTP to each other (the simulator calls the
gateway's webhook, the gateway calls the simulator's initiate endpoint). The store is whatever Redis
client the test hands in: a real server's or the embedded one.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from gateway.app import Gateway
from gateway.config import load_settings
from gateway.queue.events import SessionFailed, SessionReady
from ratelimit import Policy, Rule
from simulator.app import PlatformSimulator, make_simulator_app

API_TOKEN = "iqra_sk_test"
WEBHOOK_TOKEN = "webhook-secret"


def session_body(campaign: str = "CampA", region: str = "eu", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "campaignId": campaign,
        "regionId": region,
        "transportType": 0,
        "clientIdentifier": None,
        "dynamicVariables": {"FirstName": "Ada"},
        "metadata": {"source": "test"},
        "audioConfiguration": {"inputEncodingType": 1, "inputSampleRate": 16000, "inputBitsPerSample": 16,
                               "outputEncodingType": 1, "outputSampleRate": 16000, "outputBitsPerSample": 16},
    }
    body.update(overrides)
    return body


def body_of(response: HTTPResponse) -> Any:
    """A response's JSON body, or ``None`` when it has none."""
    return ujson.loads(response.body) if response.body else None


def conversation_id_of(web_socket_url: str) -> str:
    """The conversation session id is the path segment after ``/ws/session/`` in the audio URL."""
    parts = urlsplit(web_socket_url).path.split("/")
    return parts[parts.index("session") + 1]


def base_config(*, cap: int | None = 2, campaign_caps: dict[str, int] | None = None, **sections: Any) -> dict[str, Any]:
    campaigns = {
        "CampA": {"BusinessId": "11", "WebCampaignId": "web-a", "AllowedRegionIds": ["eu", "us"]},
        "CampB": {"BusinessId": "22", "WebCampaignId": "web-b", "AllowedRegionIds": ["eu"]},
    }
    for name, value in (campaign_caps or {}).items():
        campaigns[name]["MaxConcurrentSessions"] = value
    config: dict[str, Any] = {
        "AllowedOrigins": ["https://shop.example"],
        "VoiceAiPlatform": {"ApiSecretToken": API_TOKEN, "BaseUrl": "http://placeholder/api/v1/",
                            "Campaigns": campaigns, "RequestTimeoutSeconds": 2, "ConnectTimeoutSeconds": 2},
        "Security": {"WebhookApiToken": WEBHOOK_TOKEN},
        "Concurrency": {"MaxConcurrentSessions": cap, "PendingLeaseSeconds": 5},
        "Queue": {"MaxLength": 10000},
    }
    if cap is None:
        del config["Concurrency"]["MaxConcurrentSessions"]
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    return config


@dataclass
class Stack:
    gateway: Gateway
    sim: PlatformSimulator
    sim_server: HTTPServer
    base_url: str
    sim_url: str
    http: AsyncHTTPClient
    ready: dict[str, asyncio.Future] = field(default_factory=dict)

    async def call(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
                   raw: bytes | None = None, base: str | None = None) -> HTTPResponse:
        payload = raw if raw is not None else (ujson.dumps(body).encode() if body is not None else None)
        if payload is None and method in ("POST", "PUT"):
            payload = b""
        if payload is not None and not any(name.lower() == "content-type" for name in headers or {}):
            # As the widget does (a session request must be JSON); Tornado's client would say form data.
            headers = {**(headers or {}), "Content-Type": "application/json"}
        return await self.http.fetch((base or self.base_url) + path, method=method, body=payload,
                                     headers=headers, raise_error=False, request_timeout=20)

    async def request_session(self, body: dict[str, Any] | None = None, **kwargs: Any) -> HTTPResponse:
        return await self.call("POST", "/api/session/request", body or session_body(), **kwargs)

    async def end(self, conversation_id: str, token: str = WEBHOOK_TOKEN) -> HTTPResponse:
        return await self.call("POST", "/api/webhook/session-ended", {"ConversationSessionId": conversation_id},
                               headers={"X-Api-Token": token})

    async def sim_call(self, method: str, path: str, body: Any = None) -> HTTPResponse:
        return await self.call(method, path, body, base=self.sim_url)

    def outcome(self, request_id: str) -> asyncio.Future:
        """A future resolved with the SessionReady/SessionFailed event of ``request_id``."""
        return self.ready.setdefault(request_id, asyncio.get_running_loop().create_future())

    async def close(self) -> None:
        self.http.close()
        await asyncio.wait_for(self.gateway.stop(grace=2), 10)
        self.sim_server.stop()
        await asyncio.wait_for(self.sim.aclose(), 10)
        await asyncio.wait_for(self.sim_server.close_all_connections(), 10)


async def queued_request(stack: Stack, **headers: str) -> str:
    """Request a session that must wait (202, asserted); its request id."""
    response = await stack.request_session(headers=headers or None)
    assert response.code == 202, response.body
    return ujson.loads(response.body)["uniqueRequestId"]


async def concurrent_units_used(stack: Stack) -> int:
    """The units of 127.0.0.1's concurrency limit in use (every test client comes from there)."""
    rule = Rule(policy=Policy.CONCURRENT, subject="client:ip:127.0.0.1", limit=1)
    return await stack.gateway.redis.zcard(stack.gateway.protection._limiter.key_for(rule))


async def start_stack(redis_client: aioredis.Redis, *, config: dict[str, Any] | None = None,
                      clock: Callable[[], float] | None = None, call_seconds: float | None = None,
                      concurrency_limit: int = 1000, dispatch_interval: float = 0.2) -> Stack:
    """A gateway and its own platform simulator on free ports (the session hub with default timers)."""
    return await start_hub_stack(redis_client, config=config, clock=clock, call_seconds=call_seconds,
                                 concurrency_limit=concurrency_limit, dispatch_interval=dispatch_interval)


async def start_hub_stack(redis_client: aioredis.Redis, *, hub_tuning: Any = None, config: dict[str, Any] | None = None,
                          clock: Callable[[], float] | None = None, call_seconds: float | None = None,
                          concurrency_limit: int = 1000, dispatch_interval: float = 0.2,
                          sim: PlatformSimulator | None = None, sim_url: str | None = None) -> Stack:
    """Like :func:`start_stack`, with session-hub timers (``gateway.live.hub.HubTuning``), and optionally
    sharing another stack's simulator (``sim``/``sim_url``) so two gateways can serve one platform."""
    gw_sockets = bind_sockets(0, "127.0.0.1")
    gw_port = gw_sockets[0].getsockname()[1]
    own_sim = sim is None
    if sim is None:
        sim = PlatformSimulator(api_token=API_TOKEN,
                                webhook_url=f"http://127.0.0.1:{gw_port}/api/webhook/session-ended",
                                webhook_token=WEBHOOK_TOKEN, call_seconds=call_seconds,
                                concurrency_limit=concurrency_limit, webhook_retry_delays=(0.05, 0.1))
        sim_sockets = bind_sockets(0, "127.0.0.1")
        sim_port = sim_sockets[0].getsockname()[1]
        sim_server = HTTPServer(make_simulator_app(sim))
        sim_server.add_sockets(sim_sockets)
        sim_url = f"http://127.0.0.1:{sim_port}"
    else:
        assert sim_url is not None
        sim_server = HTTPServer(make_simulator_app(sim))  # never listens: Stack.close() stops it harmlessly
    config = copy.deepcopy(config or base_config())
    config["VoiceAiPlatform"]["BaseUrl"] = f"{sim_url}/api/v1/"
    settings = load_settings(data=config, environ={}).settings
    kwargs: dict[str, Any] = {"redis": redis_client, "dispatch_interval": dispatch_interval, "hub_tuning": hub_tuning}
    if clock is not None:
        kwargs["clock"] = clock
    gateway = Gateway(settings, **kwargs)
    await gateway.start(sockets=gw_sockets)
    http = AsyncHTTPClient(force_instance=True, max_clients=256)
    stack = Stack(gateway=gateway, sim=sim, sim_server=sim_server, base_url=f"http://127.0.0.1:{gw_port}",
                  sim_url=sim_url, http=http)
    if not own_sim:
        async def _keep_sim() -> None:  # the owning stack closes the shared simulator
            return None
        stack.sim = type("SharedSim", (), {"aclose": staticmethod(_keep_sim)})()  # type: ignore[assignment]

    def on_event(event: Any) -> None:
        if isinstance(event, (SessionReady, SessionFailed)):
            future = stack.outcome(event.request_id)
            if not future.done():
                future.set_result(event)

    gateway.events.subscribe(on_event)
    return stack
