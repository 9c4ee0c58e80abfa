"""The demo panel's small API, mounted only by ``iqra-gateway demo``.

* ``GET /api/demo/stats``: ``{"queued": n, "active": n, "capacity": n|null}`` from the admission store, so
  a visitor can watch the queue; ``active`` counts pending leases too (a session being created holds a slot).
* ``POST /api/demo/end-call``: ends the oldest live call of the simulated platform through its control
  API. The simulator then sends the session-ended webhook, exactly as the real platform would, and the
  gateway hands the freed slot to the head of the queue.

The demo runs on loopback with a simulated platform, so these endpoints have no authentication; they must
never be mounted by ``serve``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import ujson
from redis.exceptions import RedisError
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.web import url

from gateway.queue.capacity import UNKNOWN_PLATFORM_CAP
from gateway.http.handlers import JsonHandler

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.cli.demo_api")

SIMULATOR_TIMEOUT_SECONDS = 5.0


def oldest_live_call(calls: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The call a visitor most likely means by "end a call": the longest-running one.

    :param calls: the simulator's ``/_sim/calls`` list (live calls only).
    """
    live = [c for c in calls if isinstance(c, dict) and c.get("state") != "ended" and c.get("conversationSessionId")]
    if not live:
        return None
    # Connected calls first: an initiated call nobody joined is not what the visitor is watching.
    return min(live, key=lambda c: (c.get("state") != "connected", c.get("createdAt") or 0.0))


class DemoStatsHandler(JsonHandler):
    """``GET /api/demo/stats``."""

    gateway: Gateway

    async def get(self) -> None:
        try:
            counts = await self.gateway.store.counts()
        except RedisError:
            self.send_message(503, "The store is unavailable.")
            return
        cap = self.gateway.capacity.caps().global_cap
        self.send_json(200, {
            "queued": counts["queued"],
            "active": counts["active"] + counts["pending"],
            "capacity": None if cap >= UNKNOWN_PLATFORM_CAP else cap,
        })


class DemoEndCallHandler(JsonHandler):
    """``POST /api/demo/end-call``."""

    simulator_url: str
    http: AsyncHTTPClient

    async def post(self) -> None:
        try:
            listing = await self._simulator("GET", "/_sim/calls")
            call = oldest_live_call(listing.get("calls", []) if isinstance(listing, dict) else [])
            if call is None:
                self.send_json(200, {"ended": False, "message": "There is no call to end."})
                return
            call_id = call["conversationSessionId"]
            await self._simulator("POST", f"/_sim/calls/{quote(call_id, safe='')}/end", body=b"")
        except (OSError, HTTPClientError, ValueError) as exc:
            log.warning("demo: the simulator could not end a call: %s", exc)
            self.send_message(502, "The simulated platform did not answer.")
            return
        self.send_json(200, {"ended": True, "conversationSessionId": call_id,
                             "message": "Ended the oldest call; the next in the queue gets its slot."})

    async def _simulator(self, method: str, path: str, body: bytes | None = None) -> Any:
        response = await self.http.fetch(self.simulator_url + path, method=method, body=body,
                                         request_timeout=SIMULATOR_TIMEOUT_SECONDS,
                                         connect_timeout=SIMULATOR_TIMEOUT_SECONDS)
        return ujson.loads(response.body or b"null")


def demo_routes(gateway: Gateway, *, simulator_url: str) -> list[Any]:
    """The demo API's routes.

    :param gateway: the gateway whose store and caps the panel shows.
    :param simulator_url: the simulated platform's root, e.g. ``http://127.0.0.1:8081`` (no ``/api/v1``).
    """
    common = {"cors": gateway.cors}
    http = AsyncHTTPClient()
    return [
        url(r"/api/demo/stats", DemoStatsHandler, dict(common, gateway=gateway)),
        url(r"/api/demo/end-call", DemoEndCallHandler,
            dict(common, simulator_url=simulator_url.rstrip("/"), http=http)),
    ]
