"""Tornado handlers for the platform endpoints the gateway calls: initiate and the two billing reads.

Every request is captured before its API key is checked, so tests can see what a client sent even when
it was refused.
"""

from __future__ import annotations

from typing import Any

import ujson
from tornado.web import RequestHandler

from simulator.calls import CapturedRequest
from simulator.contract import INVALID_API_KEY_CODE, envelope
from simulator.platform import PlatformSimulator


class SimHandler(RequestHandler):
    """Base of every simulator handler: JSON in, JSON out, errors as ``{"message": reason}``."""

    def initialize(self, sim: PlatformSimulator) -> None:
        self.sim = sim

    def send_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(ujson.dumps(payload, escape_forward_slashes=False))

    def json_body(self) -> Any:
        try:
            return ujson.loads(self.request.body or b"{}")
        except ValueError:
            return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.send_json({"message": self._reason}, status_code)


class _PlatformHandler(SimHandler):
    def prepare(self) -> None:
        self.sim.capture(
            CapturedRequest(
                method=self.request.method or "",
                path=self.request.path,
                headers=dict(self.request.headers.get_all()),
                body=self.request.body,
            )
        )

    def check_auth(self) -> bool:
        if self.sim.authorized(self.request.headers.get("Authorization")):
            return True
        self.send_json(envelope(code=INVALID_API_KEY_CODE, message="Invalid API key."))
        return False


class InitiateHandler(_PlatformHandler):
    async def post(self, business_id: str) -> None:
        if not self.check_auth():
            return
        mode = self.sim.take_failure()
        if mode == "http500":
            self.send_json({"title": "Internal Server Error", "status": 500}, 500)
            return
        if mode == "http400":
            self.send_json({"title": "One or more validation errors occurred.", "status": 400}, 400)
            return
        if mode == "hangup":
            self._stream().close()
            return
        if mode == "timeout":
            await self.sim.hang()
            if not self._stream().closed():
                self.send_json(self.sim.failure_envelope("error"))
            return
        if mode is not None and mode != "slow":
            self.send_json(self.sim.failure_envelope(mode))
            return
        body = self.json_body()
        if body is None:
            # ASP.NET's model binding rejects unreadable JSON before the controller runs.
            self.send_json({"title": "One or more validation errors occurred.", "status": 400}, 400)
            return
        answer = self.sim.initiate(business_id, body, self.request.host)
        if mode == "slow":
            await self.sim.hang()  # the call exists; its answer comes late, or never reaches a client gone
            if self._stream().closed():
                return
        self.send_json(answer)

    def _stream(self) -> Any:
        return self.request.connection.stream  # type: ignore[union-attr]


class BillingUsageHandler(_PlatformHandler):
    def get(self) -> None:
        if self.check_auth():
            self.send_json(self.sim.billing_usage())


class BillingFeaturesHandler(_PlatformHandler):
    def get(self) -> None:
        if self.check_auth():
            self.send_json(self.sim.billing_features())
