"""The gateway's HTTP contract, end to end: real gateway, real simulator, real Redis or the embedded store.

Every test runs twice, once on a real ``redis-server`` and once on the embedded store, since the
embedded store is what the demo and single-process deployments use.
"""

from __future__ import annotations

import asyncio

import ujson

from gateway.queue.events import SessionFailed, SessionReady
from tests.harness.fake_clock import FakeClock
from tests.harness.stack import (
    WEBHOOK_TOKEN,
    base_config,
    body_of,
    conversation_id_of,
    session_body,
)

TIMEOUT = 10


async def test_200_parallel_requests_admit_exactly_the_cap_and_queue_the_rest_in_order(stack_factory):
    cap = 5
    stack = await stack_factory(config=base_config(cap=cap))
    responses = await asyncio.gather(*(stack.request_session() for _ in range(200)))
    admitted = [r for r in responses if r.code == 200]
    queued = [body_of(r) for r in responses if r.code == 202]
    assert len(admitted) == cap
    assert len(queued) == 200 - cap
    assert sorted(q["queuePosition"] for q in queued) == list(range(1, 200 - cap + 1))
    assert len({q["uniqueRequestId"] for q in queued}) == len(queued)
    assert all(q["status"] == "queued" for q in queued)
    assert all(body_of(r)["webSocketUrl"].startswith("ws://") for r in admitted)
    # The platform was asked exactly `cap` times: a queued client never costs a platform session.
    assert len(stack.sim.live_calls) == cap


async def test_the_webhook_frees_the_slot_and_the_next_client_gets_its_session(stack_factory):
    stack = await stack_factory(config=base_config(cap=1))
    first = await stack.request_session()
    assert first.code == 200
    second = await stack.request_session()
    assert second.code == 202
    waiting = body_of(second)
    assert waiting["queuePosition"] == 1
    ready = stack.outcome(waiting["uniqueRequestId"])

    ended = await stack.end(conversation_id_of(body_of(first)["webSocketUrl"]))
    assert ended.code == 200
    event = await asyncio.wait_for(ready, TIMEOUT)
    assert isinstance(event, SessionReady)
    status = await stack.call("GET", f"/api/session/status/{waiting['uniqueRequestId']}")
    assert status.code == 200
    assert body_of(status) == {"status": "ready", "queuePosition": None, "webSocketUrl": event.web_socket_url}


async def test_the_webhook_is_idempotent_and_frees_nothing_more(stack_factory):
    stack = await stack_factory(config=base_config(cap=2))
    a = body_of(await stack.request_session())
    b = body_of(await stack.request_session())
    assert "webSocketUrl" in a and "webSocketUrl" in b
    conversation = conversation_id_of(a["webSocketUrl"])
    assert (await stack.end(conversation)).code == 200
    again = await stack.end(conversation.upper())  # ids are case-insensitive
    assert again.code == 200
    counts = await stack.gateway.store.counts()
    assert counts["active"] == 1  # b still holds its slot: the second webhook freed nothing
    c = await stack.request_session()
    d = await stack.request_session()
    assert (c.code, d.code) == (200, 202)


async def test_webhook_authentication_and_bad_bodies(stack_factory):
    stack = await stack_factory()
    admitted = body_of(await stack.request_session())
    conversation = conversation_id_of(admitted["webSocketUrl"])
    assert (await stack.end(conversation, token="wrong")).code == 401
    no_token = await stack.call("POST", "/api/webhook/session-ended", {"ConversationSessionId": conversation})
    assert no_token.code == 401
    for raw in (b"", b"{", b"[]", b'{"ConversationSessionId": 5}', b'{"ConversationSessionId": ""}'):
        response = await stack.call("POST", "/api/webhook/session-ended", raw=raw,
                                    headers={"X-Api-Token": WEBHOOK_TOKEN})
        assert response.code == 400, raw
        assert body_of(response) == {"message": "Invalid or missing ConversationSessionId."}
    unknown = await stack.end("0123456789abcdef01234567")
    assert unknown.code == 400
    assert body_of(unknown) == {"message": "No session found for ConversationSessionId."}
    lower_key = await stack.call("POST", "/api/webhook/session-ended", {"conversationsessionid": conversation},
                                 headers={"X-Api-Token": WEBHOOK_TOKEN})
    assert lower_key.code == 200


async def test_an_empty_webhook_token_setting_refuses_every_call(stack_factory):
    stack = await stack_factory(config=base_config(Security={"WebhookApiToken": ""}))
    response = await stack.end("anything", token="")
    assert response.code == 401


async def test_fifo_across_campaigns_without_head_of_line_blocking(stack_factory):
    # Global cap 2, campaign A capped at 1. A's second request waits, but B's is not held back by it.
    stack = await stack_factory(config=base_config(cap=2, campaign_caps={"CampA": 1}))
    a1 = await stack.request_session(session_body("CampA"))
    a2 = await stack.request_session(session_body("CampA"))
    b1 = await stack.request_session(session_body("CampB"))
    b2 = await stack.request_session(session_body("CampB"))
    assert [a1.code, a2.code, b1.code, b2.code] == [200, 202, 200, 202]
    assert body_of(a2)["queuePosition"] == 1
    assert body_of(b2)["queuePosition"] == 2
    # B1 ends: A2 is first in line but its campaign is still full, so B2 is served.
    b2_ready = stack.outcome(body_of(b2)["uniqueRequestId"])
    assert (await stack.end(conversation_id_of(body_of(b1)["webSocketUrl"]))).code == 200
    await asyncio.wait_for(b2_ready, TIMEOUT)
    a2_status = body_of(await stack.call("GET", f"/api/session/status/{body_of(a2)['uniqueRequestId']}"))
    assert a2_status == {"status": "queued", "queuePosition": 1}
    # A1 ends: now A2 goes.
    a2_ready = stack.outcome(body_of(a2)["uniqueRequestId"])
    assert (await stack.end(conversation_id_of(body_of(a1)["webSocketUrl"]))).code == 200
    await asyncio.wait_for(a2_ready, TIMEOUT)


async def test_a_slot_whose_webhook_never_comes_is_reclaimed_after_the_session_lease(stack_factory):
    clock = FakeClock()
    config = base_config(cap=1)
    config["Concurrency"]["SessionLeaseSeconds"] = 600
    stack = await stack_factory(config=config, clock=clock)
    assert (await stack.request_session()).code == 200
    waiting = body_of(await stack.request_session())
    ready = stack.outcome(waiting["uniqueRequestId"])
    clock.advance(599)
    stack.gateway.dispatcher.kick()
    await asyncio.sleep(0)  # let one dispatch round run; the entry must still wait
    assert not ready.done()
    clock.advance(2)
    stack.gateway.dispatcher.kick()
    event = await asyncio.wait_for(ready, TIMEOUT)
    assert isinstance(event, SessionReady)


async def test_platform_failure_on_the_direct_path_answers_502_and_gives_the_slot_back(stack_factory):
    stack = await stack_factory(config=base_config(cap=1))
    for mode in ("http500", "error", "timeout"):
        assert (await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": mode})).code == 200
        if mode == "timeout":
            stack.sim.hang_seconds = 5  # longer than the gateway's 2 s request timeout
        failed = await stack.request_session()
        assert failed.code == 502, mode
        assert body_of(failed) == {"message": "An error occurred while trying to initiate the session."}
    # No slot leaked: with a cap of 1 the next request is admitted.
    assert (await stack.request_session()).code == 200


async def test_a_platform_concurrency_refusal_queues_the_client_instead_of_failing(stack_factory):
    stack = await stack_factory(config=base_config(cap=5))
    await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "concurrency"})
    response = await stack.request_session()
    assert response.code == 202
    queued = body_of(response)
    assert queued["queuePosition"] == 1
    # The dispatcher retries after its back-off and the client gets a session.
    event = await asyncio.wait_for(stack.outcome(queued["uniqueRequestId"]), TIMEOUT)
    assert isinstance(event, SessionReady)


async def test_a_failed_queued_dispatch_tells_the_client_and_serves_the_next(stack_factory):
    stack = await stack_factory(config=base_config(cap=1))
    first = body_of(await stack.request_session())
    second = body_of(await stack.request_session())
    third = body_of(await stack.request_session())
    await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "error"})
    failed = stack.outcome(second["uniqueRequestId"])
    served = stack.outcome(third["uniqueRequestId"])
    await stack.end(conversation_id_of(first["webSocketUrl"]))
    event = await asyncio.wait_for(failed, TIMEOUT)
    assert isinstance(event, SessionFailed)
    assert event.message == "An error occurred while creating your session. Please try again."
    assert isinstance(await asyncio.wait_for(served, TIMEOUT), SessionReady)
    status = body_of(await stack.call("GET", f"/api/session/status/{second['uniqueRequestId']}"))
    assert status["status"] == "failed"
    assert status["message"] == "An error occurred while creating your session. Please try again."


async def test_queue_max_length_answers_503_with_retry_after(stack_factory):
    config = base_config(cap=1)
    config["Queue"]["MaxLength"] = 2
    stack = await stack_factory(config=config)
    codes = [(await stack.request_session()).code for _ in range(3)]
    assert codes == [200, 202, 202]
    full = await stack.request_session()
    assert full.code == 503
    assert int(full.headers["Retry-After"]) > 0
    assert "queue is full" in body_of(full)["message"]


async def test_status_of_an_unknown_id_is_404(stack_factory):
    stack = await stack_factory()
    response = await stack.call("GET", "/api/session/status/edbdf408-db05-4ebd-a3c3-376df1f5b021")
    assert response.code == 404
    assert "message" in body_of(response)


async def test_bad_bodies_get_400_with_the_originals_messages_and_oversize_gets_413(stack_factory):
    stack = await stack_factory()
    malformed = await stack.call("POST", "/api/session/request", raw=b"{not json")
    assert malformed.code == 400 and "message" in body_of(malformed)
    campaign = await stack.request_session(session_body("Nope"))
    assert (campaign.code, body_of(campaign)) == (400, {"message": "Invalid or missing CampaignId."})
    region = await stack.request_session(session_body("CampB", "us"))
    assert (region.code, body_of(region)) == (
        400, {"message": "Invalid or missing RegionId, or RegionId not allowed for this campaign."})
    huge = session_body(metadata={"k": "x" * 70_000})
    too_large = await stack.request_session(huge)
    assert too_large.code == 413
    assert "64 KiB" in body_of(too_large)["message"]
    # Nothing above took a slot.
    assert (await stack.gateway.store.counts())["active"] == 0


async def test_cors_preflight_and_responses_for_allowed_and_other_origins(stack_factory):
    stack = await stack_factory()
    preflight = await stack.call("OPTIONS", "/api/session/request", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Origin" in preflight.headers.get_list("Vary")[0]
    other = await stack.call("OPTIONS", "/api/session/request", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers
    allowed = await stack.request_session(headers={"Origin": "https://shop.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    denied = await stack.request_session(headers={"Origin": "https://evil.example"})
    assert (denied.code, body_of(denied)) == (403, {"message": "Origin not allowed."})
    assert "Access-Control-Allow-Origin" not in denied.headers


async def test_health_and_readiness(stack_factory):
    stack = await stack_factory()
    assert (await stack.call("GET", "/healthz")).code == 200
    ready = await stack.call("GET", "/readyz")
    assert (ready.code, body_of(ready)) == (200, {"status": "ready"})
    missing = await stack.call("GET", "/no/such/path")
    assert missing.code == 404 and body_of(missing) == {"message": "Not found."}


async def test_overlong_ids_are_unknown_not_server_errors(stack_factory):
    stack = await stack_factory()
    status = await stack.call("GET", "/api/session/status/" + "a" * 300)
    assert (status.code, body_of(status)) == (404, {"message": "No queued request with this uniqueRequestId."})
    ended = await stack.end("b" * 300)
    assert (ended.code, body_of(ended)) == (400, {"message": "No session found for ConversationSessionId."})


async def test_error_responses_keep_their_cors_headers(stack_factory):
    stack = await stack_factory()
    # 405 comes from Tornado's send_error, which clears headers first: the browser must still read it.
    response = await stack.call("PUT", "/api/session/request", raw=b"{}", headers={"Origin": "https://shop.example"})
    assert response.code == 405
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert body_of(response) == {"message": "This method is not allowed here."}


async def test_text_that_has_no_utf8_form_is_refused_at_the_door(stack_factory):
    # "\ud800" is valid JSON but a lone surrogate: it cannot be sent to the platform. Queued, it would fail
    # every dispatch and take a slot each time it reached the front; refused here, nothing is held.
    stack = await stack_factory(config=base_config(cap=0))
    for field, document in (
        ("metadata.note", session_body(metadata={"note": "@"})),
        ("clientIdentifier", dict(session_body(), clientIdentifier="id-@")),
    ):
        raw = ujson.dumps(document).replace("@", "\\ud800").encode()
        response = await stack.call("POST", "/api/session/request", raw=raw)
        assert response.code == 400, response.body
        assert body_of(response)["message"].startswith(f"{field} contains a character that is not valid Unicode")
    assert (await stack.gateway.store.counts())["queued"] == 0
