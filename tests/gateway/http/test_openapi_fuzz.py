"""schemathesis against a live gateway (embedded store, platform simulator): every answer is one the OpenAPI
document lists, with its status code, content type, headers and body schema, and none is a server error.

The document is the one ``GET /openapi.json`` serves (``test_openapi_document.py`` checks they are the same).
Requests come from schemathesis (``requests``, blocking), so the stack runs on a thread of its own.

The stack is set up to reach the answers beyond 400: the document's example names its campaign, and a hook
puts that campaign into half of the generated bodies, so bodies get past the campaign check into the
audio, text and map rules, and then into admission: 200 while a slot is free, 202 queued, 429 past the
hourly limit, 503 once the small queue is full (the only 5xx allowed, checked by message). The examples
per operation are bounded so the run stays well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import settings
from hypothesis import strategies as st

from gateway.http.openapi import build_openapi
from gateway.queue.answers import QUEUE_FULL_MESSAGE
from tests.harness.stack import WEBHOOK_TOKEN, base_config
from tests.harness.threaded import stack_in_thread

#: The campaign and region of the document's example request.
CAMPAIGN, REGION = "DemoCampaign", "local"
#: The admin API is enabled, so its routes are fuzzed with the token too (pauses and caps included).
ADMIN_TOKEN = "fuzz-admin-token-0123456789"
#: Every answer must be documented, typed as documented, and invalid input refused with a 4xx.
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
          "response_schema_conformance", "negative_data_rejection", "ignored_auth")
REFUSALS = ["400", "401", "403", "404", "405", "409", "413", "415", "429"]
MAX_EXAMPLES = 30
SESSION_REQUEST_EXAMPLES = 120

#: Strings that have broken gateways before, tried in one string of ten (path ids, body fields, headers).
AWKWARD = [" ", "\t", "\r\n", " \n ", ".", "..", "/", "\\", "%", "%2F", "?", "#", ";", "\u00e9", "\u0000", "null", "0",
           "-1", "x" * 257]

SCHEMA = schemathesis.openapi.from_dict(build_openapi(), config=schemathesis.Config.from_dict({
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES,
                   "dictionaries": {"string": {"dictionary": "awkward", "probability": 0.1}}},
    "dictionaries": {"awkward": {"values": AWKWARD}},
    "checks": {
        "enabled": False,
        **{name: {"enabled": True} for name in CHECKS},
        # 503 is documented (queue full); which 503 it may be is checked below.
        "not_a_server_error": {"enabled": True, "expected-statuses": ["2xx", "3xx", "4xx", "503"]},
        # A body made invalid can also be too large (413) or, by then, over the rate limit (429).
        "negative_data_rejection": {"enabled": True, "expected-statuses": REFUSALS},
    },
    # Stateful steps follow the document's own links only, not links schemathesis guesses from names.
    "phases": {"stateful": {"inference": {"algorithms": []}}},
    "auth": {"openapi": {"webhookToken": {"api_key": WEBHOOK_TOKEN}, "adminToken": {"bearer": ADMIN_TOKEN}}},
    "operations": [{"include-operation-id": "requestSession",
                    "generation": {"max-examples": SESSION_REQUEST_EXAMPLES}}],
}))


@SCHEMA.hooks.hook("flatmap_body").apply_to(operation_id="requestSession")
def flatmap_body(ctx: Any, body: Any) -> st.SearchStrategy:
    # Only where both names are valid strings already: an invalid one is what makes a negative body negative.
    names = ("campaignId", "regionId")
    if isinstance(body, dict) and all(isinstance(body.get(key), str) and body[key] for key in names):
        return st.sampled_from([{**body, "campaignId": CAMPAIGN, "regionId": REGION}, body])
    return st.just(body)


def only_a_full_queue(ctx: Any, response: Any, case: Any) -> None:
    """The one 5xx this setup provokes: the embedded store never fails and the simulator never refuses."""
    if response.status_code >= 500:
        assert (case.operation.label, response.json()) == ("POST /api/session/request", {"message": QUEUE_FULL_MESSAGE})


def fuzz_config(*, cap: int, **sections: Any) -> dict[str, Any]:
    config = base_config(cap=cap, **sections)
    config["Admin"] = {"ApiToken": ADMIN_TOKEN}
    config["VoiceAiPlatform"]["Campaigns"][CAMPAIGN] = {"BusinessId": "1", "WebCampaignId": "web-demo",
                                                        "AllowedRegionIds": [REGION]}
    return config


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    # Calls end after 0.2 s (the simulator then calls the webhook), so slots keep freeing up.
    config = fuzz_config(cap=2, Security={"RateLimitHourly": 25}, Queue={"MaxLength": 8})
    with stack_in_thread(config=config, call_seconds=0.2) as stack:
        yield stack.base_url


@SCHEMA.parametrize()
@settings(deadline=None)
def test_every_answer_is_one_the_document_lists(case: schemathesis.Case, gateway_url: str) -> None:
    case.call_and_validate(base_url=gateway_url, additional_checks=[only_a_full_queue])


def test_a_request_followed_through_the_links_keeps_to_the_document() -> None:
    # The links of the 202 lead to the request's status and to leaving; from there to leaving again (409)
    # and to the status of a request that left. Calls never end here, so valid requests queue.
    with stack_in_thread(config=fuzz_config(cap=1), call_seconds=None) as stack:

        class Workflow(SCHEMA.as_state_machine()):  # type: ignore[misc]
            def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
                return {"base_url": stack.base_url}

            def validate_response(self, response: Any, case: schemathesis.Case, additional_checks: Any = None,
                                  **kwargs: Any) -> None:
                super().validate_response(response, case, additional_checks=[only_a_full_queue], **kwargs)

        Workflow.run(settings=settings(max_examples=15, stateful_step_count=6, deadline=None))
