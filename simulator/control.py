"""The simulator's control API under ``/_sim/``, for tests and the demo: steer the simulated platform and look inside.

End a call, inject initiate failures, change the concurrency limit, switch the initiate answer's shape, and list
calls, counters and captured requests.
"""

from __future__ import annotations

from collections.abc import Mapping

from simulator.api import SimHandler
from simulator.contract import ci_get, strict_int
from simulator.platform import FAIL_MODES, SHAPES


class EndCallHandler(SimHandler):
    def post(self, call_id: str) -> None:
        if call_id not in self.sim.calls:
            self.send_json({"message": f"No call {call_id}."}, 404)
            return
        ended = self.sim.end_call(call_id, "ended by control API")
        self.send_json({"ended": ended, "call": self.sim.calls[call_id].to_dict()})


class FailHandler(SimHandler):
    def post(self) -> None:
        body = self.json_body()
        count = ci_get(body, "count") if isinstance(body, Mapping) else None
        mode = ci_get(body, "mode") if isinstance(body, Mapping) else None
        code, message = (ci_get(body, "code"), ci_get(body, "message")) if isinstance(body, Mapping) else (None, None)
        if strict_int(count) is None or count < 0 or mode not in FAIL_MODES:
            self.send_json(
                {"message": f'Body must be {{"count": N >= 0, "mode": one of {", ".join(FAIL_MODES)}}}.'}, 400
            )
            return
        if not all(v is None or isinstance(v, str) for v in (code, message)):
            self.send_json({"message": "code and message must be strings."}, 400)
            return
        self.sim.fail_next(count, mode, code=code, message=message)
        self.send_json(self.sim.stats())


class LimitHandler(SimHandler):
    def post(self) -> None:
        body = self.json_body()
        limit = ci_get(body, "limit") if isinstance(body, Mapping) else None
        if strict_int(limit) is None or limit < 0:
            self.send_json({"message": 'Body must be {"limit": N >= 0}.'}, 400)
            return
        self.sim.concurrency_limit = limit
        self.send_json(self.sim.stats())


class ShapeHandler(SimHandler):
    def post(self) -> None:
        body = self.json_body()
        shape = ci_get(body, "shape") if isinstance(body, Mapping) else None
        if shape not in SHAPES:
            self.send_json({"message": f'Body must be {{"shape": one of {", ".join(SHAPES)}}}.'}, 400)
            return
        self.sim.response_shape = shape
        self.send_json(self.sim.stats())


class CallsHandler(SimHandler):
    def get(self) -> None:
        every = self.get_query_argument("all", "0") == "1"
        calls = self.sim.calls.values() if every else self.sim.live_calls
        self.send_json({"calls": [call.to_dict() for call in calls]})


class StatsHandler(SimHandler):
    def get(self) -> None:
        self.send_json(self.sim.stats())


class RequestsHandler(SimHandler):
    def get(self) -> None:
        captured = [
            {"method": r.method, "path": r.path, "headers": dict(r.headers), "body": r.body.decode("utf-8", "replace")}
            for r in self.sim.requests
        ]
        self.send_json({"requests": captured})
