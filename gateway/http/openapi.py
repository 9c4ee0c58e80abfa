"""The OpenAPI 3.1 document of the REST routes, served at ``GET /openapi.json`` and rendered at ``/docs``.

Built in code, not written by hand, so it cannot drift from the code: the body schemas take their limits
from the validator's constants (:mod:`gateway.http.openapi_schemas`), the edge's limits come from
:mod:`gateway.http.edge_rules`, and the messages shown as examples are the handlers' own. The admin API's
part is kept apart in :mod:`gateway.http.openapi_admin`. ``tests/gateway/http/test_openapi_fuzz.py`` runs
schemathesis against a live gateway with this document: every answer must be one it lists.

Pure data: no Tornado, no I/O.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from gateway.http import edge_rules
from gateway.http.base import (
    BODY_TOO_LARGE_MESSAGE,
    MAX_ID_LENGTH,
    ORIGIN_NOT_ALLOWED_MESSAGE,
    UNKNOWN_REQUEST_MESSAGE,
)
from gateway.http.handlers import (
    BAD_TOKEN_MESSAGE,
    NOT_JSON_MESSAGE,
    UNKNOWN_SESSION_MESSAGE,
)
from gateway.http.openapi_admin import admin_components, admin_paths
from gateway.http.openapi_schemas import Schema, body_schemas, ref
from gateway.model.request import CAMPAIGN_MESSAGE, MAX_BODY_BYTES
from gateway.queue.answers import INITIATE_FAILED_MESSAGE, STORE_DOWN_MESSAGE

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"

_DESCRIPTION = f"""Web-session gateway between browser voice widgets and the Iqra AI voice platform.

Every error is JSON `{{"message": "..."}}` with a sentence a person can act on. Every answer from a route
carries `X-Request-Id` (the caller's own when it sends a sane one). Queued clients wait on the SignalR hub at
`/sessionHub` (not described here: see the README). At the edge, for every route: a request head over
{edge_rules.MAX_HEAD_BYTES // 1024} KiB is 431, a URL over {edge_rules.MAX_TARGET_BYTES // 1024} KiB 414, a
body over {edge_rules.MAX_BODY_BYTES // 1024} KiB 413 ({MAX_BODY_BYTES // 1024} KiB on the session routes),
a request that is not valid HTTP/1.1 400, and a connection over the `Limits` caps 503 with `Retry-After`."""


def _version() -> str:
    try:
        return metadata.version("iqra-gateway")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"


def _json(schema: Schema, description: str, *, example: Any = None, headers: dict[str, Any] | None = None,
          links: dict[str, Any] | None = None) -> Schema:
    media: Schema = {"schema": schema}
    if example is not None:
        media["example"] = example
    response: Schema = {"description": description, "content": {"application/json": media}}
    if headers:
        response["headers"] = headers
    if links:
        response["links"] = links
    return response


def _links(source: str, *operation_ids: str) -> dict[str, Schema]:
    """Links to the operations on the same request id (``source``: a runtime expression that finds it)."""
    return {operation_id: {"operationId": operation_id, "parameters": {"uniqueRequestId": source}}
            for operation_id in operation_ids}


#: What a client may do next with the id of a queued request, or with a request whose status it read.
_FROM_QUEUED = _links("$response.body#/uniqueRequestId", "sessionStatus", "leaveQueue", "withdrawRequest")
_FROM_PATH = _links("$request.path.uniqueRequestId", "leaveQueue", "withdrawRequest")


def _header(name: str) -> Schema:
    return {"$ref": f"#/components/headers/{name}"}


_RETRY_AFTER = {"Retry-After": _header("Retry-After")}
_RATE_LIMIT_HEADERS = {name: _header(name) for name in ("RateLimit-Policy", "RateLimit")}


def _error(description: str, example: str, *, headers: dict[str, Any] | None = None) -> Schema:
    return _json(ref("Error"), description, example={"message": example}, headers=headers)


def _responses() -> dict[str, Schema]:
    """Answers shared by several routes (``components.responses``)."""
    return {
        "BadRequest": _error("The request is wrong: the message says what to fix (or it is not valid HTTP/1.1).",
                             CAMPAIGN_MESSAGE),
        "Unauthorized": _error("A missing or wrong token.", BAD_TOKEN_MESSAGE),
        "Forbidden": _error("A browser page whose Origin is not in AllowedOrigins.", ORIGIN_NOT_ALLOWED_MESSAGE),
        "NotFound": _error("No such request: never issued, or no longer remembered.", UNKNOWN_REQUEST_MESSAGE),
        "PayloadTooLarge": _error(f"The body is over {MAX_BODY_BYTES // 1024} KiB on the session routes, "
                                  f"{edge_rules.MAX_BODY_BYTES // 1024} KiB on any other.", BODY_TOO_LARGE_MESSAGE),
        "UriTooLong": _error(f"The URL is over {edge_rules.MAX_TARGET_BYTES // 1024} KiB.",
                             edge_rules.TARGET_TOO_LONG.message),
        "HeadersTooLarge": _error(f"The request head is over {edge_rules.MAX_HEAD_BYTES // 1024} KiB.",
                                  edge_rules.HEAD_TOO_LARGE.message),
        "Unavailable": _error("The store (Redis) is unreachable, or the server has too many open connections; "
                              "retry after `Retry-After` seconds.", STORE_DOWN_MESSAGE, headers=_RETRY_AFTER),
    }


def _headers() -> dict[str, Schema]:
    return {
        "Retry-After": {"description": "Seconds to wait before trying again.", "required": True,
                        "schema": {"type": "integer", "minimum": 0}},
        "RateLimit-Policy": {
            "description": "The rate-limit policies (draft-ietf-httpapi-ratelimit-headers), when limits are set: "
                           '`"hourly";q=3;w=3600, "concurrent";q=1;qu="concurrent-requests"`.',
            "schema": {"type": "string"}},
        "RateLimit": {"description": 'The most constrained policy\'s state: `"hourly";r=2;t=1800`.',
                      "schema": {"type": "string"}},
    }


def _edge(*statuses: str) -> dict[str, Schema]:
    """References to shared answers, by status code."""
    names = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound",
             "413": "PayloadTooLarge", "414": "UriTooLong", "431": "HeadersTooLarge", "503": "Unavailable"}
    return {status: {"$ref": f"#/components/responses/{names[status]}"} for status in statuses}


_EDGE = ("400", "413", "414", "431", "503")
_REQUEST_ID = {
    "name": "uniqueRequestId", "in": "path", "required": True,
    "description": "The id from the 202 answer (a UUID, matched in any letter case); any other string is "
                   "unknown (404).",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
    "example": "3f2b8c1e-6d4a-4f7e-9b1c-2a5d8e7f9c0b",
}


def _session_request() -> Schema:
    example = {"campaignId": "DemoCampaign", "regionId": "local", "transportType": 0,
               "clientIdentifier": "user-abcdef-12345", "dynamicVariables": {"FirstName": "Ada"},
               "metadata": {"source": "homepage_widget"},
               "audioConfiguration": {"inputEncodingType": 1, "inputSampleRate": 16000, "inputBitsPerSample": 16,
                                      "outputEncodingType": 1, "outputSampleRate": 16000, "outputBitsPerSample": 16}}
    return {
        "operationId": "requestSession", "tags": ["Sessions"], "summary": "Ask for a voice session",
        "description": "Validates the request, checks the client's IP and rate limits, then either takes a "
                       "slot and asks the platform for a session (200) or queues the client (202).",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": ref("SessionRequest"), "example": example}}},
        "responses": {
            "200": _json(ref("SessionAdmitted"), "A slot was free: connect the audio WebSocket now.",
                         headers=_RATE_LIMIT_HEADERS),
            "202": _json(ref("SessionQueued"), "Queued: register the id on /sessionHub (or poll its status).",
                         headers=_RATE_LIMIT_HEADERS, links=_FROM_QUEUED),
            **_edge("400"),
            "403": _error("Refused: an anonymizer (VPN, proxy, datacenter, Tor), a blocked network, or a browser "
                          "page whose Origin is not allowed.", "VPN detected."),
            **_edge("413", "414"),
            "415": _error("The body is not sent as application/json.", NOT_JSON_MESSAGE),
            "429": _error("A rate limit: hourly, daily or concurrent sessions, per client or per IP.",
                          "Hourly rate limit exceeded.", headers=_RETRY_AFTER | _RATE_LIMIT_HEADERS),
            **_edge("431"),
            "502": _error("The platform failed (its concurrency refusal queues the client instead).",
                          INITIATE_FAILED_MESSAGE),
            "503": _error("The store (Redis) is unreachable, the queue is at Queue.MaxLength, or the server has too "
                          "many open connections.", "The waiting queue is full. Please try again later.",
                          headers=_RETRY_AFTER),
        },
    }


def _leave(operation_id: str, summary: str) -> Schema:
    return {
        "operationId": operation_id, "tags": ["Sessions"], "summary": summary,
        "description": "Takes a waiting request out of the queue, for a client without a live hub connection "
                       "(the POST form is what navigator.sendBeacon sends). Any body is ignored.",
        "parameters": [_REQUEST_ID],
        "responses": {
            "204": {"description": "It was waiting; it left, and the places behind moved up."},
            **_edge("400", "403", "404"),
            "409": _json(ref("LeaveConflict"), "No longer waiting (served, failed, left); nothing changed."),
            **_edge("413", "414", "431", "503"),
        },
    }


def _session_paths() -> dict[str, Schema]:
    return {
        "/api/session/request": {"post": _session_request()},
        "/api/session/status/{uniqueRequestId}": {"get": {
            "operationId": "sessionStatus", "tags": ["Sessions"], "summary": "Where a request is (polling)",
            "description": "For clients that cannot use SignalR. Each poll of a waiting request counts as its "
                           "client being present.",
            "parameters": [_REQUEST_ID],
            "responses": {"200": _json(ref("SessionStatus"), "The request's state.", links=_FROM_PATH),
                          **_edge(*_EDGE, "404")},
        }},
        "/api/session/leave/{uniqueRequestId}": {"post": _leave("leaveQueue", "Leave the queue (beacon)")},
        "/api/session/request/{uniqueRequestId}": {"delete": _leave("withdrawRequest", "Leave the queue")},
        "/api/webhook/session-ended": {"post": {
            "operationId": "sessionEnded", "tags": ["Platform"], "summary": "The platform's end-of-call callback",
            "description": "Frees the conversation's slot and serves the next queued client; repeating it frees "
                           "nothing more.",
            "security": [{"webhookToken": []}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": ref("SessionEnded"), "example": {"ConversationSessionId": "c0ffee-1234"}}}},
            "responses": {
                "200": {"description": "The slot is free (or was already)."},
                "400": _error("A missing or unknown ConversationSessionId (or not valid HTTP/1.1).",
                              UNKNOWN_SESSION_MESSAGE),
                **_edge("401", "413", "414", "431", "503"),
            },
        }},
    }


def _health_paths() -> dict[str, Schema]:
    edge = _edge(*_EDGE)
    return {
        "/healthz": {"get": {"operationId": "alive", "tags": ["Health"], "summary": "Liveness",
                             "responses": {"200": _json(ref("Alive"), "The process answers."), **edge}}},
        "/readyz": {"get": {"operationId": "ready", "tags": ["Health"], "summary": "Readiness",
                            "responses": {
                                "200": _json(ref("Ready"), "The store answers: route traffic here."),
                                **_edge("400", "413", "414", "431"),
                                "503": _json(ref("NotReady"), "Not ready: the store is unreachable.",
                                             headers=_RETRY_AFTER),
                            }}},
        OPENAPI_PATH: {"get": {"operationId": "openApi", "tags": ["Health"], "summary": "This document",
                               "responses": {"200": _json({"type": "object"}, "The OpenAPI document."), **edge}}},
    }


def build_openapi() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document, as JSON-ready data."""
    schemas, responses, security = body_schemas(), _responses(), {
        "webhookToken": {"type": "apiKey", "in": "header", "name": "X-Api-Token",
                         "description": "Security.WebhookApiToken (compared in constant time; always 401 when unset)."},
    }
    admin = admin_components()
    schemas.update(admin["schemas"])
    security.update(admin["securitySchemes"])
    return {
        "openapi": "3.1.0",
        "info": {"title": "Iqra web-session gateway", "version": _version(), "description": _DESCRIPTION,
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "tags": [{"name": "Sessions", "description": "The widget's routes."},
                 {"name": "Platform", "description": "Called by the Iqra platform."},
                 {"name": "Health", "description": "For load balancers and tools."},
                 {"name": "Admin", "description": "Operators' API (bearer token; 404 when Admin.ApiToken is unset)."}],
        "paths": {**_session_paths(), **_health_paths(), **admin_paths()},
        "components": {"schemas": schemas, "responses": responses, "headers": _headers(),
                       "securitySchemes": security},
    }


__all__ = ["DOCS_PATH", "OPENAPI_PATH", "build_openapi"]
