"""The admin API against a real gateway, its platform simulator and a real store (Redis and the embedded one):
the token, the snapshot, pause and resume, the cap override, ending a session and removing a request."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.model.departures import Departure, departure_message
from gateway.queue.events import SessionFailed, SessionReady
from tests.harness.browser import capture_logs
from tests.harness.session_hub import HubClient
from tests.harness.stack import base_config, body_of, conversation_id_of, queued_request, session_body

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Operator": "alice"}
TIMEOUT = 10


def admin_config(cap: int = 1, **extra) -> dict:
    config = base_config(cap=cap, **extra)
    config["Admin"] = {"ApiToken": TOKEN}
    return config


async def admin(stack, method: str, path: str, body=None, **kwargs):
    return await stack.call(method, "/api/admin" + path, body, headers={**AUTH, **kwargs.pop("headers", {})},
                            **kwargs)


async def snapshot(stack, query: str = "") -> dict:
    response = await admin(stack, "GET", "/queue" + query)
    assert response.code == 200, response.body
    assert response.headers["Cache-Control"] == "no-store"
    return body_of(response)


async def admitted(stack) -> str:
    response = await stack.request_session()
    assert response.code == 200, response.body
    return conversation_id_of(body_of(response)["webSocketUrl"])


async def test_the_api_is_absent_without_a_token(stack_factory):
    stack = await stack_factory(config=base_config())
    for method, path in (("GET", "/queue"), ("POST", "/dispatch/pause"), ("PUT", "/capacity")):
        response = await admin(stack, method, path, {"maxConcurrentSessions": 1} if method == "PUT" else None)
        assert response.code == 404, (path, response.body)


async def test_every_route_wants_the_token_and_sends_no_cors(stack_factory):
    stack = await stack_factory(config=admin_config())
    routes = (("GET", "/queue"), ("POST", "/dispatch/pause"), ("POST", "/dispatch/resume"),
              ("PUT", "/capacity"), ("POST", "/sessions/abc/end"), ("DELETE", "/requests/abc"))
    with capture_logs("gateway.admin", level=logging.WARNING) as lines:
        for method, path in routes:
            for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                           {"Authorization": f"Basic {TOKEN}"}):
                body = {"maxConcurrentSessions": 1} if method == "PUT" else None
                response = await stack.call(method, "/api/admin" + path, body, headers=header)
                assert response.code == 401, (method, path, header, response.code)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert "Admin.ApiToken" in body_of(response)["message"]
    assert sum("wrong or missing token" in line for line in lines) == 4 * len(routes)
    assert not (await snapshot(stack))["paused"]  # nothing above changed anything
    response = await admin(stack, "GET", "/queue", headers={"Origin": "https://shop.example"})
    assert response.code == 200 and "Access-Control-Allow-Origin" not in response.headers


async def test_the_snapshot_shows_the_queue_the_sessions_and_the_cap(stack_factory):
    stack = await stack_factory(config=admin_config(cap=1))
    conversation = await admitted(stack)
    first = await queued_request(stack)
    response = await stack.request_session(session_body(campaign="CampB", region="eu", clientIdentifier="b"))
    second = body_of(response)["uniqueRequestId"]
    assert (await stack.call("GET", f"/api/session/status/{first}")).code == 200  # a poll registers presence
    view = await snapshot(stack)
    assert view["queueLength"] == 2 and view["paused"] is False
    assert view["cap"] == {"maxConcurrentSessions": 1, "source": "config"}
    assert view["sessions"] == {"active": 1, "pending": 0}
    assert [(e["uniqueRequestId"], e["position"], e["campaignId"], e["regionId"], e["registered"], e["dispatching"])
            for e in view["entries"]] == [(first, 1, "CampA", "eu", True, False), (second, 2, "CampB", "eu", False, False)]
    assert all(0 <= e["ageSeconds"] < 60 for e in view["entries"])
    [session] = view["activeSessions"]
    assert session["conversationSessionId"] == conversation and session["campaignId"] == "CampA"
    assert 0 <= session["ageSeconds"] < 60
    assert view["totals"]["sessionRequests"]["admitted"] == 1
    assert view["totals"]["sessionRequests"]["queued"] == 2
    assert {"buckets", "count", "sum"} <= set(view["totals"]["waitSeconds"])
    assert [e["uniqueRequestId"] for e in (await snapshot(stack, "?limit=1"))["entries"]] == [first]
    assert (await snapshot(stack, "?limit=0"))["entries"] == []
    for bad in ("abc", "-1", "501", "1.5", ""):
        response = await admin(stack, "GET", f"/queue?limit={bad}")
        assert response.code == 400 and "limit" in body_of(response)["message"], bad


async def test_pause_queues_even_with_free_slots_and_resume_serves_at_once(stack_factory):
    stack = await stack_factory(config=admin_config(cap=2))
    response = await admin(stack, "POST", "/dispatch/pause")
    assert response.code == 200 and body_of(response) == {"paused": True}
    waiting = await queued_request(stack)  # both slots are free, and still it waits
    await stack.gateway.dispatcher.wait_idle()
    assert (await snapshot(stack))["paused"] is True
    assert (await stack.call("GET", f"/api/session/status/{waiting}")).code == 200
    ready = stack.outcome(waiting)
    response = await admin(stack, "POST", "/dispatch/resume")
    assert response.code == 200 and body_of(response) == {"paused": False}
    event = await asyncio.wait_for(ready, TIMEOUT)
    assert isinstance(event, SessionReady)
    assert (await snapshot(stack))["paused"] is False
    assert (await stack.request_session()).code == 200  # the other slot admits directly again


@pytest.mark.redis
async def test_every_process_obeys_a_pause_and_a_cap_at_once(stack_factory, store_client):
    one = await stack_factory(config=admin_config(cap=1))
    two = await stack_factory(config=admin_config(cap=1))
    assert (await admin(one, "POST", "/dispatch/pause")).code == 200
    waiting = await queued_request(two)  # the other process queues it too: the pause is in the store
    assert (await admin(two, "PUT", "/capacity", {"maxConcurrentSessions": 3})).code == 200
    assert (await snapshot(one))["cap"] == {"maxConcurrentSessions": 3, "source": "override"}
    ready = two.outcome(waiting)
    assert (await admin(two, "POST", "/dispatch/resume")).code == 200
    assert isinstance(await asyncio.wait_for(ready, TIMEOUT), SessionReady)
    # Override 3 on processes configured with 1: two more sessions are admitted directly on the other process.
    assert (await one.request_session()).code == 200
    assert (await one.request_session(session_body(clientIdentifier="c"))).code == 200
    assert (await one.request_session(session_body(clientIdentifier="d"))).code == 202


async def test_a_cap_override_admits_more_and_null_returns_to_the_configured_cap(stack_factory):
    stack = await stack_factory(config=admin_config(cap=1))
    await admitted(stack)
    waiting = await queued_request(stack)
    ready = stack.outcome(waiting)
    response = await admin(stack, "PUT", "/capacity", {"maxConcurrentSessions": 2})
    assert response.code == 200 and body_of(response) == {"maxConcurrentSessions": 2, "source": "override"}
    assert isinstance(await asyncio.wait_for(ready, TIMEOUT), SessionReady)
    metrics = (await stack.call("GET", "/metrics")).body.decode()
    assert 'iqra_gateway_session_cap{source="override"} 2.0' in metrics
    assert "iqra_gateway_dispatch_paused 0.0" in metrics
    response = await admin(stack, "PUT", "/capacity", {"maxConcurrentSessions": None})
    assert body_of(response) == {"maxConcurrentSessions": 1, "source": "config"}
    assert (await stack.request_session(session_body(clientIdentifier="x"))).code == 202  # 2 live, cap 1 again
    assert (await admin(stack, "PUT", "/capacity", {"maxConcurrentSessions": 0})).code == 200
    view = await snapshot(stack)
    assert view["cap"] == {"maxConcurrentSessions": 0, "source": "override"}
    assert [c["action"] for c in view["recentChanges"][:3]] == ["capacity", "capacity", "capacity"]
    assert view["recentChanges"][0]["cap"] == 0 and view["recentChanges"][0]["operator"] == "alice"


async def test_a_bad_capacity_body_is_refused_and_changes_nothing(stack_factory):
    stack = await stack_factory(config=admin_config(cap=1))
    for raw in (b"", b"abc", b"[]", b"{}", b'{"maxConcurrentSessions": -1}', b'{"maxConcurrentSessions": 1.5}',
                b'{"maxConcurrentSessions": true}', b'{"maxConcurrentSessions": "3"}',
                b'{"maxConcurrentSessions": 100001}', b'{"maxConcurrentSessions": 2, "other": 1}',
                b'{"maxConcurrentSessions": "\\ud800"}'):
        response = await admin(stack, "PUT", "/capacity", raw=raw)
        assert response.code == 400, (raw, response.code)
        assert "maxConcurrentSessions" in body_of(response)["message"]
    response = await admin(stack, "PUT", "/capacity", raw=b'{"maxConcurrentSessions": ' + b" " * 4096 + b"2}")
    assert response.code == 413
    assert (await snapshot(stack))["cap"] == {"maxConcurrentSessions": 1, "source": "config"}
    assert (await snapshot(stack))["recentChanges"] == []


async def test_ending_a_session_whose_webhook_never_came_frees_its_slot(stack_factory):
    stack = await stack_factory(config=admin_config(cap=1))
    conversation = await admitted(stack)
    waiting = await queued_request(stack)
    ready = stack.outcome(waiting)
    response = await admin(stack, "POST", f"/sessions/{conversation.upper()}/end")
    assert response.code == 200 and body_of(response) == {"result": "released"}
    assert isinstance(await asyncio.wait_for(ready, TIMEOUT), SessionReady)
    response = await admin(stack, "POST", f"/sessions/{conversation}/end")
    assert response.code == 200 and body_of(response) == {"result": "already_ended"}
    assert (await stack.end(conversation)).code == 200  # the late webhook is harmless
    for unknown in ("no-such-session", "x" * 300, "%20"):
        response = await admin(stack, "POST", f"/sessions/{unknown}/end")
        assert response.code == 404, unknown
    change = (await snapshot(stack))["recentChanges"][1]
    assert change["action"] == "end session" and change["conversationSessionId"] == conversation


async def test_removing_a_waiting_request_tells_its_client_why(stack_factory):
    stack = await stack_factory(config=admin_config(cap=1))
    await admitted(stack)
    removed, behind = await queued_request(stack), await queued_request(stack)
    hub = await HubClient.connect(stack.base_url)
    behind_hub = await HubClient.connect(stack.base_url)
    try:
        assert (await hub.register(removed))["queuePosition"] == 1
        assert (await behind_hub.register(behind))["queuePosition"] == 2
        failed = stack.outcome(removed)
        with capture_logs("gateway.admin", level=logging.WARNING) as lines:
            response = await admin(stack, "DELETE", f"/requests/{removed.upper()}")
        assert response.code == 204, response.body
        assert any("alice (127.0.0.1) removed request" in line for line in lines)
        message = departure_message(Departure.REMOVED, register_timeout=0, disconnect_grace=0)
        assert (await hub.next_event("SessionFailed"))[1]["message"] == message
        assert isinstance(await asyncio.wait_for(failed, TIMEOUT), SessionFailed)
        await behind_hub.position(1)  # the one behind moved up
        status = body_of(await stack.call("GET", f"/api/session/status/{removed}"))
        assert status["status"] == "failed" and status["message"] == message
        assert (await admin(stack, "DELETE", f"/requests/{removed}")).code == 409
        assert (await admin(stack, "DELETE", "/requests/no-such-request")).code == 404
        metrics = (await stack.call("GET", "/metrics")).body.decode()
        assert 'iqra_gateway_queue_abandonments_total{reason="removed"} 1.0' in metrics
    finally:
        await hub.close()
        await behind_hub.close()
