"""The admin API's part of the OpenAPI document (:mod:`gateway.http.openapi`), from the handlers' own
constants (:mod:`gateway.admin.endpoint`).

Every admin route needs ``Authorization: Bearer <Admin.ApiToken>`` (401 without it) and answers 404 when
``Admin.ApiToken`` is unset (the API is disabled). ``tests/gateway/http/test_openapi_fuzz.py`` runs
schemathesis against a gateway with the API enabled.
"""

from __future__ import annotations

from typing import Any

from gateway.http.admin import (
    CAP_MESSAGE,
    DEFAULT_LIMIT,
    MAX_ADMIN_BODY_BYTES,
    MAX_CAP,
    NOT_WAITING_MESSAGE,
    TOKEN_MESSAGE,
    UNKNOWN_REQUEST_MESSAGE,
    UNKNOWN_SESSION_MESSAGE,
)
from gateway.admission.snapshot import MAX_SNAPSHOT_LIMIT
from gateway.http.base import MAX_ID_LENGTH
from gateway.queue.capacity import CapSource

Schema = dict[str, Any]

_SECURITY = [{"adminToken": []}]
_SHARED = {"414": "UriTooLong", "431": "HeadersTooLarge", "503": "Unavailable"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str, example: Any = None) -> Schema:
    content: Schema = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"description": description, "content": {"application/json": content}}


def _error(description: str, message: str) -> Schema:
    return _json(_ref("Error"), description, {"message": message})


def _operation(operation_id: str, summary: str, responses: dict[str, Schema], **extra: Any) -> Schema:
    """An admin operation: its own answers, plus 400, 401, 404 (disabled or unknown) and the edge's."""
    every = {status: {"$ref": f"#/components/responses/{name}"} for status, name in _SHARED.items()}
    every["400"] = {"$ref": "#/components/responses/BadRequest"}
    every["401"] = {**_error("A missing or wrong admin token.", TOKEN_MESSAGE),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True,
                                                     "description": 'Bearer realm="admin"'}}}
    every["404"] = _json(_ref("Error"), "The admin API is disabled (Admin.ApiToken is unset), or no such item.")
    every["413"] = {"$ref": "#/components/responses/PayloadTooLarge"}
    return {"operationId": operation_id, "tags": ["Admin"], "summary": summary, "security": _SECURITY,
            **extra, "responses": {**every, **responses}}


def _id_parameter(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}}


def admin_paths() -> dict[str, Schema]:
    """``paths`` of the admin API."""
    paused = _json(_ref("AdminDispatch"), "Whether dispatching is now paused.")
    limit = {"name": "limit", "in": "query", "required": False,
             "description": "Most items listed of each kind (waiting, being dispatched, active sessions).",
             "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SNAPSHOT_LIMIT, "default": DEFAULT_LIMIT}}
    return {
        "/api/admin/queue": {"get": _operation(
            "adminQueue", "A snapshot of the whole deployment's queue, sessions, cap and controls",
            {"200": _json(_ref("AdminQueueSnapshot"), "The queue, the active sessions, the cap and its source, "
                                                      "the latest changes and the totals the dashboard charts.")},
            parameters=[limit])},
        "/api/admin/dispatch/pause": {"post": _operation(
            "adminPause", "Stop serving the queue (new requests queue even with free slots), on every process",
            {"200": paused})},
        "/api/admin/dispatch/resume": {"post": _operation(
            "adminResume", "Serve the queue again", {"200": paused})},
        "/api/admin/capacity": {"put": _operation(
            "adminCapacity", "Override the global cap at runtime, for every process",
            {"200": _json(_ref("AdminCapacity"), "The effective cap and its source."),
             "400": _error("The body is not the object this route takes.", CAP_MESSAGE)},
            requestBody={"required": True, "content": {"application/json": {"schema": _ref("AdminCapacityChange")}}})},
        "/api/admin/sessions/{conversationSessionId}/end": {"post": _operation(
            "adminEndSession", "Free a slot whose webhook never came",
            {"200": _json(_ref("AdminEnded"), "The slot is free (or was already)."),
             "404": _error("The API is disabled, or no such session is known.", UNKNOWN_SESSION_MESSAGE)},
            parameters=[_id_parameter("conversationSessionId", "The platform's conversation session id.")])},
        "/api/admin/requests/{uniqueRequestId}": {"delete": _operation(
            "adminRemoveRequest", "Remove a waiting request (its client gets SessionFailed)",
            {"204": {"description": "Removed."},
             "404": _error("The API is disabled, or no such request is known.", UNKNOWN_REQUEST_MESSAGE),
             "409": _error("The request is no longer waiting.", NOT_WAITING_MESSAGE)},
            parameters=[_id_parameter("uniqueRequestId", "The waiting request's id.")])},
    }


def _histogram() -> Schema:
    return {"type": "object", "required": ["buckets", "count", "sum"], "properties": {
        "buckets": {"type": "array", "items": {"type": "object", "required": ["le", "count"], "properties": {
            "le": {"type": "number"}, "count": {"type": "integer", "minimum": 0}}}},
        "count": {"type": "integer", "minimum": 0}, "sum": {"type": "number"}},
        "description": "A cumulative histogram, summed over every process (as /metrics has it)."}


def _snapshot_schema(cap: Schema, cap_source: Schema) -> Schema:
    count = {"type": "integer", "minimum": 0}
    age = {"type": ["number", "null"], "minimum": 0}
    return {
        "type": "object",
        "required": ["time", "queueLength", "paused", "cap", "sessions", "entries", "activeSessions",
                     "recentChanges", "totals"],
        "properties": {
            "time": {"type": "number", "description": "The server's clock (Unix seconds)."},
            "queueLength": count,
            "paused": {"type": "boolean"},
            "cap": {"type": "object", "properties": {"maxConcurrentSessions": cap, "source": cap_source}},
            "sessions": {"type": "object", "properties": {"active": count, "pending": count}},
            "entries": {"type": "array", "description": "Requests being dispatched (position 0), then the first "
                                                        "waiting ones in queue order.", "items": {
                "type": "object", "properties": {
                    "uniqueRequestId": {"type": "string"}, "position": count, "ageSeconds": age,
                    "campaignId": {"type": "string"}, "regionId": {"type": "string"},
                    "registered": {"type": "boolean"}, "dispatching": {"type": "boolean"}}}},
            "activeSessions": {"type": "array", "items": {
                "type": "object", "properties": {
                    "conversationSessionId": {"type": "string"}, "campaignId": {"type": "string"},
                    "ageSeconds": age}}},
            "recentChanges": {"type": "array", "description": "The latest changes made with this API, newest "
                                                              "first (time, ip, operator, action, details).",
                              "items": {"type": "object"}},
            "totals": {"type": "object", "properties": {
                "sessionRequests": {"type": "object", "additionalProperties": count,
                                    "description": "Session requests by outcome since the processes started."},
                "waitSeconds": _histogram(), "estimateErrorSeconds": _histogram()}},
        },
    }


def admin_components() -> dict[str, dict[str, Schema]]:
    """The admin API's ``components.schemas`` and ``components.securitySchemes``."""
    cap_source = {"enum": [source.value for source in CapSource],
                  "description": "Where the effective cap comes from: the configuration, the platform, or an "
                                 "operator's override."}
    cap = {"type": ["integer", "null"], "minimum": 0, "description": "null: not known yet (the platform's limit)."}
    return {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer",
                                           "description": "Admin.ApiToken (compared in constant time)."}},
        "schemas": {
            "AdminQueueSnapshot": _snapshot_schema(cap, cap_source),
            "AdminDispatch": {"type": "object", "required": ["paused"], "properties": {"paused": {"type": "boolean"}}},
            "AdminCapacityChange": {
                "type": "object", "required": ["maxConcurrentSessions"], "additionalProperties": False,
                "properties": {"maxConcurrentSessions": {
                    "type": ["integer", "null"], "minimum": 0, "maximum": MAX_CAP,
                    "description": "The new global cap; null returns to the configured source."}},
                "description": f"At most {MAX_ADMIN_BODY_BYTES} bytes.",
            },
            "AdminCapacity": {"type": "object", "required": ["maxConcurrentSessions", "source"],
                              "properties": {"maxConcurrentSessions": cap, "source": cap_source}},
            "AdminEnded": {"type": "object", "required": ["result"],
                           "properties": {"result": {"enum": ["released", "already_ended"]}}},
        },
    }
