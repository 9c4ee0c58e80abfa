"""The admin API's part of the OpenAPI document (:mod:`gateway.http.openapi`).

PROVISIONAL: written from the description of the admin API in issue 13 (section 2) before its handlers
existed. When they land, align the paths, bodies and status codes here with what they really do; the
schemathesis test (``tests/gateway/http/test_openapi_fuzz.py``) then checks them against a live gateway. Until
then the routes are absent, which is what a gateway without ``Admin.ApiToken`` answers anyway: 404.

Every admin route needs ``Authorization: Bearer <Admin.ApiToken>`` (401 without it) and answers 404 when
``Admin.ApiToken`` is unset (the API is disabled).
"""

from __future__ import annotations

from typing import Any

from gateway.http.base import MAX_ID_LENGTH

Schema = dict[str, Any]

_SECURITY = [{"adminToken": []}]
_SHARED = {"401": "Unauthorized", "413": "PayloadTooLarge", "414": "UriTooLong", "431": "HeadersTooLarge",
           "503": "Unavailable"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(operation_id: str, summary: str, responses: dict[str, Schema], **extra: Any) -> Schema:
    """An admin operation: its own answers, plus 400, 401, 404 (disabled or unknown) and the edge's."""
    every = {status: {"$ref": f"#/components/responses/{name}"} for status, name in _SHARED.items()}
    every["400"] = {"$ref": "#/components/responses/BadRequest"}
    every["404"] = _json(_ref("Error"), "The admin API is disabled (Admin.ApiToken is unset), or no such item.")
    return {"operationId": operation_id, "tags": ["Admin"], "summary": summary, "security": _SECURITY,
            **extra, "responses": {**responses, **every}}


def _id_parameter(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}}


def admin_paths() -> dict[str, Schema]:
    """``paths`` of the admin API (PROVISIONAL, see the module's docstring)."""
    paused = _json(_ref("AdminDispatch"), "Whether dispatching is now paused.")
    return {
        "/api/admin/queue": {"get": _operation(
            "adminQueue", "A snapshot of the whole deployment's queue",
            {"200": _json(_ref("AdminQueueSnapshot"), "The queue, the active sessions, the cap and its source.")})},
        "/api/admin/dispatch/pause": {"post": _operation(
            "adminPause", "Stop serving the queue (new requests queue even with free slots), on every process",
            {"200": paused})},
        "/api/admin/dispatch/resume": {"post": _operation(
            "adminResume", "Serve the queue again", {"200": paused})},
        "/api/admin/capacity": {"put": _operation(
            "adminCapacity", "Override the global cap at runtime, for every process",
            {"200": _json(_ref("AdminCapacity"), "The effective cap and its source.")},
            requestBody={"required": True, "content": {"application/json": {"schema": _ref("AdminCapacityChange")}}})},
        "/api/admin/sessions/{conversationSessionId}/end": {"post": _operation(
            "adminEndSession", "Free a slot whose webhook never came",
            {"200": {"description": "The slot is free."}},
            parameters=[_id_parameter("conversationSessionId", "The platform's conversation session id.")])},
        "/api/admin/requests/{uniqueRequestId}": {"delete": _operation(
            "adminRemoveRequest", "Remove a waiting request (its client gets SessionFailed)",
            {"204": {"description": "Removed."},
             "409": _json(_ref("LeaveConflict"), "The request is no longer waiting.")},
            parameters=[_id_parameter("uniqueRequestId", "The waiting request's id.")])},
    }


def admin_components() -> dict[str, dict[str, Schema]]:
    """The admin API's ``components.schemas`` and ``components.securitySchemes`` (PROVISIONAL)."""
    cap_source = {"enum": ["config", "platform", "admin"],
                  "description": "Where the effective cap comes from: the configuration, the platform, or an "
                                 "admin override."}
    cap = {"type": ["integer", "null"], "minimum": 0, "description": "null: no global cap."}
    return {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer",
                                           "description": "Admin.ApiToken (compared in constant time)."}},
        "schemas": {
            "AdminQueueSnapshot": {
                "type": "object",
                "properties": {
                    "queueLength": {"type": "integer", "minimum": 0},
                    "paused": {"type": "boolean"},
                    "cap": {"type": "object", "properties": {"effective": cap, "source": cap_source}},
                    "entries": {"type": "array", "description": "The first waiting requests.", "items": {
                        "type": "object", "properties": {
                            "uniqueRequestId": {"type": "string"}, "ageSeconds": {"type": "number", "minimum": 0},
                            "campaignId": {"type": "string"}, "regionId": {"type": "string"},
                            "registered": {"type": "boolean"}}}},
                    "activeSessions": {"type": "array", "items": {
                        "type": "object", "properties": {
                            "conversationSessionId": {"type": "string"},
                            "ageSeconds": {"type": "number", "minimum": 0}}}},
                },
            },
            "AdminDispatch": {"type": "object", "properties": {"paused": {"type": "boolean"}}},
            "AdminCapacityChange": {
                "type": "object", "required": ["maxConcurrentSessions"],
                "properties": {"maxConcurrentSessions": cap | {
                    "description": "The new global cap; null returns to the configured source."}},
            },
            "AdminCapacity": {"type": "object", "properties": {"maxConcurrentSessions": cap, "source": cap_source}},
        },
    }
