"""Leaving the queue over plain HTTP (``POST /api/session/leave/{id}``, ``DELETE /api/session/request/{id}``).

Real gateway, real simulator, on a real ``redis-server`` and on the embedded store. The route is what a
page without a hub connection (closing, or still loading the SignalR client) uses to give its place back.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.model.departures import Departure, departure_message
from gateway.queue.events import SessionFailed, SessionReady
from tests.harness.stack import base_config, body_of, conversation_id_of, queued_request, start_stack

TIMEOUT = 10
ALLOWED = "https://shop.example"  # in base_config's AllowedOrigins
UNKNOWN_ID = "edbdf408-db05-4ebd-a3c3-376df1f5b021"
LEFT_MESSAGE = departure_message(Departure.LEFT, register_timeout=60, disconnect_grace=45)


@pytest.fixture
async def stack(store_client):
    stack = await start_stack(store_client, config=base_config(cap=1))
    yield stack
    await stack.close()


async def _status(stack, request_id: str) -> dict:
    return body_of(await stack.call("GET", f"/api/session/status/{request_id}"))


async def test_a_waiting_request_leaves_and_the_one_behind_takes_its_turn(stack):
    first = body_of(await stack.request_session())
    leaving = await queued_request(stack)
    behind = await queued_request(stack)
    assert (await _status(stack, behind))["queuePosition"] == 2

    # What sendBeacon sends: a POST, possibly with a text body, which the route ignores.
    response = await stack.call("POST", f"/api/session/leave/{leaving}", raw=b"bye",
                                headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert response.code == 204
    assert response.body == b"" and "Content-Type" not in response.headers
    assert (await _status(stack, leaving)) == {"status": "failed", "queuePosition": None, "message": LEFT_MESSAGE}
    assert (await _status(stack, behind)) == {"status": "queued", "queuePosition": 1}
    assert (await stack.gateway.store.counts())["queued"] == 1

    # The freed slot goes to the request that stayed, not to the one that left.
    served = stack.outcome(behind)
    assert (await stack.end(conversation_id_of(first["webSocketUrl"]))).code == 200
    assert isinstance(await asyncio.wait_for(served, TIMEOUT), SessionReady)
    assert stack.outcome(leaving).result() == SessionFailed(request_id=leaving, message=LEFT_MESSAGE)


async def test_the_delete_form_leaves_too_and_ids_match_in_any_case(stack):
    assert (await stack.request_session()).code == 200
    leaving = await queued_request(stack)
    response = await stack.call("DELETE", f"/api/session/request/{leaving.upper()}")
    assert response.code == 204
    assert (await stack.gateway.store.counts())["queued"] == 0


async def test_unknown_and_overlong_ids_are_404(stack):
    for path in (f"/api/session/leave/{UNKNOWN_ID}", "/api/session/leave/" + "a" * 300):
        response = await stack.call("POST", path)
        assert response.code == 404, path
        assert body_of(response) == {"message": "No queued request with this uniqueRequestId."}
    response = await stack.call("DELETE", f"/api/session/request/{UNKNOWN_ID}")
    assert response.code == 404


async def test_each_path_takes_only_its_own_method(stack):
    assert (await stack.request_session()).code == 200
    waiting = await queued_request(stack)
    assert (await stack.call("DELETE", f"/api/session/leave/{waiting}")).code == 405
    assert (await stack.call("POST", f"/api/session/request/{waiting}")).code == 405
    assert (await stack.call("GET", f"/api/session/leave/{waiting}")).code == 405
    assert (await _status(stack, waiting))["status"] == "queued"


async def test_a_request_that_is_no_longer_waiting_is_409_and_nothing_changes(stack):
    first = body_of(await stack.request_session())
    failing = await queued_request(stack)
    served = await queued_request(stack)
    gone = await queued_request(stack)

    assert (await stack.call("POST", f"/api/session/leave/{gone}")).code == 204
    again = await stack.call("POST", f"/api/session/leave/{gone}")
    assert again.code == 409
    assert body_of(again)["status"] == "failed"

    await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "error"})
    failed = stack.outcome(failing)
    ready = stack.outcome(served)
    await stack.end(conversation_id_of(first["webSocketUrl"]))
    assert isinstance(await asyncio.wait_for(failed, TIMEOUT), SessionFailed)
    event = await asyncio.wait_for(ready, TIMEOUT)
    assert isinstance(event, SessionReady)

    response = await stack.call("POST", f"/api/session/leave/{failing}")
    assert response.code == 409
    assert body_of(response)["status"] == "failed"
    response = await stack.call("DELETE", f"/api/session/request/{served}")
    assert response.code == 409
    assert body_of(response) == {"status": "ready",
                                 "message": "The request is no longer waiting in the queue; nothing was changed."}
    # The served session keeps its slot and its URL.
    assert (await stack.gateway.store.counts())["active"] == 1
    assert (await _status(stack, served))["webSocketUrl"] == event.web_socket_url


async def test_cors_as_for_the_other_session_routes(stack):
    assert (await stack.request_session()).code == 200
    for method in ("POST", "DELETE"):
        preflight = await stack.call("OPTIONS", f"/api/session/leave/{UNKNOWN_ID}", headers={
            "Origin": ALLOWED, "Access-Control-Request-Method": method})
        assert preflight.code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert preflight.headers["Access-Control-Allow-Methods"] == method
    other = await stack.call("OPTIONS", f"/api/session/request/{UNKNOWN_ID}", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"})
    assert "Access-Control-Allow-Origin" not in other.headers

    leaving = await queued_request(stack)
    allowed = await stack.call("POST", f"/api/session/leave/{leaving}", headers={"Origin": ALLOWED})
    assert allowed.code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in allowed.headers["Vary"]
    unknown = await stack.call("POST", f"/api/session/leave/{UNKNOWN_ID}", headers={"Origin": ALLOWED})
    assert unknown.code == 404
    assert unknown.headers["Access-Control-Allow-Origin"] == ALLOWED

    # A page on another origin is refused outright (a beacon is sent whatever CORS says), and the
    # request keeps its place.
    stranger = await queued_request(stack)
    denied = await stack.call("POST", f"/api/session/leave/{stranger}", headers={"Origin": "https://evil.example"})
    assert (denied.code, body_of(denied)) == (403, {"message": "Origin not allowed."})
    assert "Access-Control-Allow-Origin" not in denied.headers
    assert (await _status(stack, stranger))["status"] == "queued"
