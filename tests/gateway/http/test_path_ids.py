"""The request id in a REST path: ids no request can have are unknown (404), never a server error.

Found by the schemathesis run (tests/gateway/http/test_openapi_fuzz.py): an id of only whitespace
(``/api/session/status/%20``) reached the admission store, which refuses blank ids with a ValueError, and
the client got a 500.
"""

from __future__ import annotations

import pytest

from gateway.http.base import UNKNOWN_REQUEST_MESSAGE
from tests.harness.stack import base_config, body_of, start_stack

ROUTES = [("GET", "/api/session/status/{}"), ("POST", "/api/session/leave/{}"),
          ("DELETE", "/api/session/request/{}")]


@pytest.fixture
async def stack(store_client):
    stack = await start_stack(store_client, config=base_config(cap=1))
    yield stack
    await stack.close()


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_a_blank_request_id_is_unknown(stack, method: str, path: str) -> None:
    for blank in ("%20", "%09", "%0A", "%20%20%0D%0A"):
        response = await stack.call(method, path.format(blank))
        assert response.code == 404, (blank, response.body)
        assert body_of(response) == {"message": UNKNOWN_REQUEST_MESSAGE}
