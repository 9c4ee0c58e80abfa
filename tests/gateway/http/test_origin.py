"""Who may act through the public routes: foreign origins, content types, and text that is not UTF-8.

A browser sends a request to any site a page names, with its visitor's IP; CORS only hides the answer.
So the routes that act (session request, leave, the SignalR negotiate) refuse a foreign ``Origin``,
and a session request must be JSON, which no cross-site "simple request" can be. Real gateway and
simulator, on the embedded store.
"""

from __future__ import annotations

import pytest
import ujson

from gateway.redis.client import open_redis
from tests.harness.edge_client import exchange
from tests.harness.stack import WEBHOOK_TOKEN, base_config, body_of, queued_request, session_body, start_stack

ALLOWED = "https://shop.example"  # in base_config's AllowedOrigins
FOREIGN = "https://evil.example"
REFUSED = (403, {"message": "Origin not allowed."})
NOT_JSON = (415, {"message": 'Send the session request as JSON, with the header "Content-Type: application/json".'})
NEGOTIATE = "/sessionHub/negotiate?negotiateVersion=1"


@pytest.fixture
async def stack():
    stack = await start_stack(open_redis(None), config=base_config(cap=0))  # every request waits
    yield stack
    await stack.close()
    await stack.gateway.redis.aclose()


def answer(response):
    return response.code, body_of(response)


async def test_a_page_on_a_foreign_origin_can_neither_queue_nor_leave_nor_negotiate(stack):
    for origin in (FOREIGN, "null", "https://shop.example.evil.example"):
        assert answer(await stack.request_session(headers={"Origin": origin})) == REFUSED
        negotiate = await stack.call("POST", NEGOTIATE, raw=b"", headers={"Origin": origin})
        assert answer(negotiate) == REFUSED
        assert "Access-Control-Allow-Origin" not in negotiate.headers
    assert (await stack.gateway.store.counts())["queued"] == 0

    waiting = await queued_request(stack)
    for method, path in (("POST", f"/api/session/leave/{waiting}"), ("DELETE", f"/api/session/request/{waiting}")):
        assert answer(await stack.call(method, path, headers={"Origin": FOREIGN})) == REFUSED
    status = await stack.call("GET", f"/api/session/status/{waiting}")
    assert ujson.loads(status.body)["status"] == "queued"


async def test_apps_without_an_origin_and_allowed_pages_are_unchanged(stack):
    assert (await stack.call("POST", NEGOTIATE, raw=b"")).code == 200
    allowed = await stack.call("POST", NEGOTIATE, raw=b"", headers={"Origin": ALLOWED})
    assert allowed.code == 200 and allowed.headers["Access-Control-Allow-Origin"] == ALLOWED
    from_app = await queued_request(stack)
    from_page = await queued_request(stack, Origin=ALLOWED.upper())  # origins compare case-insensitively
    assert (await stack.call("DELETE", f"/api/session/request/{from_app}")).code == 204
    assert (await stack.call("DELETE", f"/api/session/request/{from_page}", headers={"Origin": ALLOWED})).code == 204


async def test_the_widgets_beacon_leave_still_works_from_an_allowed_origin(stack):
    # navigator.sendBeacon(url) sends no body and no content type; with a string it sends text/plain.
    bare = await queued_request(stack)
    raw = (f"POST /api/session/leave/{bare} HTTP/1.1\r\nHost: g\r\nOrigin: {ALLOWED}\r\nContent-Length: 0\r\n"
           "Connection: close\r\n\r\n").encode()
    assert (await exchange(stack.gateway.port, raw)).status == 204
    text = await queued_request(stack)
    response = await stack.call("POST", f"/api/session/leave/{text}", raw=b"bye",
                                headers={"Origin": ALLOWED, "Content-Type": "text/plain;charset=UTF-8"})
    assert response.code == 204


@pytest.mark.parametrize("content_type", [
    "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/jsonp", "text/json",
])
async def test_a_session_request_that_is_not_json_is_415(stack, content_type):
    response = await stack.request_session(headers={"Content-Type": content_type})
    assert answer(response) == NOT_JSON
    assert (await stack.gateway.store.counts())["queued"] == 0


async def test_a_session_request_without_a_content_type_is_415_and_json_in_any_spelling_is_taken(stack):
    body = ujson.dumps(session_body()).encode()
    raw = (f"POST /api/session/request HTTP/1.1\r\nHost: g\r\nContent-Length: {len(body)}\r\n"
           "Connection: close\r\n\r\n").encode() + body
    response = await exchange(stack.gateway.port, raw)
    assert (response.status, response.json()) == NOT_JSON
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON ; charset=UTF-8"):
        assert (await stack.request_session(headers={"Content-Type": content_type})).code == 202


async def test_a_webhook_id_that_has_no_utf8_form_is_400_naming_it(stack):
    raw = b'{"ConversationSessionId": "conv-\\ud800"}'
    response = await stack.call("POST", "/api/webhook/session-ended", raw=raw, headers={"X-Api-Token": WEBHOOK_TOKEN})
    code, body = answer(response)
    assert code == 400 and "ConversationSessionId" in body["message"] and "UTF-8" in body["message"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/session/status/{}"), ("POST", "/api/session/leave/{}"), ("DELETE", "/api/session/request/{}"),
])
@pytest.mark.parametrize("raw_id", ["%ED%A0%80", "abc%FF", "%C0%AF"])
async def test_a_path_id_that_is_not_utf8_text_is_400_naming_it(stack, method, path, raw_id):
    response = await stack.call(method, path.format(raw_id))
    code, body = answer(response)
    assert code == 400 and "uniqueRequestId" in body["message"], body


async def test_the_service_routes_answer_json_to_methods_they_do_not_have(stack):
    for method, path, code in (("POST", "/healthz", 405), ("DELETE", "/readyz", 405), ("PUT", "/nowhere", 404)):
        response = await stack.call(method, path, raw=None if method == "DELETE" else b"{}")
        assert response.code == code and set(answer(response)[1]) == {"message"}
