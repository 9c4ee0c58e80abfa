"""Scraping ``/metrics`` and the scripted flow whose every step the metrics must count.

The scrape is parsed with prometheus_client's own parser. The flow runs against any gateway base URL (one
process from the stack harness, or ``serve --processes 2``), each request on a fresh connection, so that
under ``--processes`` the front hands them to the workers in turn and both workers count some of them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from tests.harness.geo_mmdb import ANONYMOUS_IP_TYPE, anonymous_record, write_database
from tests.harness.session_hub import HubClient
from tests.harness.stack import WEBHOOK_TOKEN, base_config, conversation_id_of, session_body

VPN_IP = "198.51.100.1"
CLEAN_IP = "203.0.113.9"
FOREIGN_ORIGIN = "https://evil.example"


class Scrape:
    """One parsed scrape: every sample by its name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = {(sample.name, frozenset(sample.labels.items())): sample.value
                        for family in text_string_to_metric_families(text) for sample in family.samples}

    def value(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels} in the scrape:\n{self.text}"
        return self.samples[key]

    def has(self, name: str) -> bool:
        return any(sample_name == name for sample_name, _ in self.samples)


async def scrape(http: AsyncHTTPClient, url: str, **headers: str) -> Scrape:
    """``GET url`` (a ``/metrics`` URL); the answer must be 200."""
    response = await http.fetch(url, headers=headers or None, raise_error=False, request_timeout=20)
    assert response.code == 200, (response.code, response.body)
    return Scrape(response.body.decode())


def flow_config(tmp: Path) -> dict[str, Any]:
    """Cap 1, a queue of at most 2, an hourly limit of 1 per client, VPNs blocked (a database made here),
    and the test client (127.0.0.1) trusted to say which address it speaks for."""
    database = write_database(tmp / "anonymous.mmdb", ANONYMOUS_IP_TYPE, {f"{VPN_IP}/32": anonymous_record(vpn=True)})
    config = base_config(cap=1)
    config["Queue"]["MaxLength"] = 2
    config["Security"].update({"BlockVpn": True, "RateLimitHourly": 1})
    config["GeoIp"] = {"AnonymousIpDatabase": str(database)}
    config["ForwardedHeaders"] = {"KnownProxies": ["127.0.0.1"]}
    return config


@dataclass
class FlowResult:
    """What the scripted flow left: the session that holds the slot, and the hub client of the served request."""

    conversation: str = ""
    hub: HubClient | None = None
    statuses: list[int] = field(default_factory=list)


class ScriptedFlow:
    """Admit, queue, every refusal, a hub client, a leave and webhooks, against ``base``.

    :param base: the gateway's base URL.
    :param sim: the platform simulator's base URL (its control API makes the platform fail once).
    """

    def __init__(self, http: AsyncHTTPClient, base: str, sim: str) -> None:
        self.http = http
        self.base = base
        self.sim = sim
        self.result = FlowResult()

    async def call(self, method: str, path: str, body: Any = None, *, base: str | None = None,
                   headers: dict[str, str] | None = None) -> HTTPResponse:
        payload = None if body is None and method == "GET" else json.dumps(body if body is not None else {}).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        response = await self.http.fetch((base or self.base) + path, method=method, body=payload, headers=sent,
                                         raise_error=False, request_timeout=20)
        self.result.statuses.append(response.code)
        return response

    async def ask(self, client: str, *, ip: str = CLEAN_IP, expect: int, **overrides: Any) -> dict[str, Any]:
        """A session request for ``client`` from ``ip``; its status must be ``expect``."""
        headers = {"X-Forwarded-For": ip, **overrides.pop("headers", {})}
        response = await self.call("POST", "/api/session/request",
                                   session_body(clientIdentifier=client, **overrides), headers=headers)
        assert response.code == expect, (client, response.code, response.body)
        return json.loads(response.body) if response.body else {}

    async def until_refusals(self) -> list[str]:
        """Everything up to the hub: returns the two queued request ids."""
        await self.call("POST", "/_sim/fail", {"count": 1, "mode": "http400"}, base=self.sim)
        await self.ask("p", expect=502)  # the platform refused: the slot goes back
        admitted = await self.ask("a", expect=200)
        self.result.conversation = conversation_id_of(admitted["webSocketUrl"])
        queued = [(await self.ask(name, expect=202))["uniqueRequestId"] for name in ("q1", "q2")]
        await self.ask("f", expect=503)  # Queue.MaxLength
        await self.ask("q1", expect=429)  # its hourly limit of 1 was used by its first request
        await self.ask("i", expect=400, campaignId="NoSuchCampaign")
        await self.ask("v", ip=VPN_IP, expect=403)
        await self.ask("o", expect=403, headers={"Origin": FOREIGN_ORIGIN})
        return queued

    async def register(self, request_id: str) -> HubClient:
        hub = await HubClient.connect(self.base)
        self.result.hub = hub
        assert (await hub.register(request_id))["status"] == "queued"
        return hub

    async def leave_and_end(self, leaving: str, waiting: str) -> None:
        """``leaving`` leaves; a webhook with a wrong token, then the real one frees the slot for ``waiting``."""
        assert (await self.call("POST", f"/api/session/leave/{leaving}")).code == 204
        end = {"ConversationSessionId": self.result.conversation}
        assert (await self.call("POST", "/api/webhook/session-ended", end, headers={"X-Api-Token": "wrong"})).code == 401
        response = await self.call("POST", "/api/webhook/session-ended", end, headers={"X-Api-Token": WEBHOOK_TOKEN})
        assert response.code == 200
        assert self.result.hub is not None
        name, payload = await self.result.hub.next_event("SessionReady")
        assert payload["webSocketUrl"].startswith("ws"), (name, payload)


#: The counters after :meth:`ScriptedFlow.until_refusals` and :meth:`ScriptedFlow.leave_and_end`.
FLOW_REQUESTS = {("admitted", ""): 1, ("queued", ""): 2, ("queue_full", ""): 1, ("rate_limited", "hourly"): 1,
                 ("invalid", ""): 1, ("blocked", "vpn"): 1, ("blocked", "origin"): 1, ("platform_failure", ""): 1,
                 ("store_unavailable", ""): 0, ("error", ""): 0}


def assert_flow_counted(scraped: Scrape, *, store_unavailable: int = 0) -> None:
    """Every step of the flow, counted once (whichever process served it)."""
    expected = {**FLOW_REQUESTS, ("store_unavailable", ""): store_unavailable}
    for (outcome, reason), count in expected.items():
        assert scraped.value("iqra_gateway_session_requests_total", outcome=outcome, reason=reason) == count, outcome
    durations: dict[str, int] = {}
    for (outcome, _), count in expected.items():
        durations[outcome] = durations.get(outcome, 0) + count
    for outcome, count in durations.items():
        assert scraped.value("iqra_gateway_session_request_duration_seconds_count", outcome=outcome) == count, outcome
    assert scraped.value("iqra_gateway_platform_calls_total", operation="initiate", result="permanent") == 1
    # The admitted request's call, then the queued one's, made by the dispatcher when the webhook freed the slot.
    assert scraped.value("iqra_gateway_platform_calls_total", operation="initiate", result="success") == 2
    assert scraped.value("iqra_gateway_platform_call_duration_seconds_count", operation="initiate") == 3
    assert scraped.value("iqra_gateway_dispatch_attempts_total", result="success") == 1
    assert scraped.value("iqra_gateway_dispatch_failures_total", kind="permanent") == 0
    assert scraped.value("iqra_gateway_webhooks_total", result="released") == 1
    assert scraped.value("iqra_gateway_webhooks_total", result="unauthorized") == 1
    assert scraped.value("iqra_gateway_queue_abandonments_total", reason="left") == 1
    assert scraped.value("iqra_gateway_queue_abandonments_total", reason="disconnected") == 0
    assert scraped.value("iqra_gateway_queue_wait_seconds_count") == 1
    assert scraped.value("iqra_gateway_queue_wait_seconds_sum") > 0


def assert_queue_state(scraped: Scrape, *, queued: int, active: int, campaign: str = "CampA") -> None:
    """The deployment's gauges, read from the store by whoever answered."""
    assert scraped.value("iqra_gateway_store_up") == 1
    assert scraped.value("iqra_gateway_queue_length") == queued
    assert scraped.value("iqra_gateway_campaign_queue_length", campaign=campaign) == queued
    assert scraped.value("iqra_gateway_sessions", state="active") == active
    assert scraped.value("iqra_gateway_sessions", state="pending") == 0
    assert scraped.value("iqra_gateway_campaign_sessions", campaign=campaign, state="active") == active
    assert scraped.value("iqra_gateway_session_cap", source="config") == 1


def hub_connections(scraped: Scrape) -> float:
    return scraped.value("iqra_gateway_hub_connections", transport="WebSockets", protocol="json")


async def until(check: Callable[[], Any], what: str, *, attempts: int = 100) -> None:
    """Until ``await check()`` is true: for state another process changes, which sends no event to wait on."""
    for _ in range(attempts):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")
