"""``Admin.ApiToken`` from the file and the environment, refused when unusable; and the admin API while the
store does not answer: 503 with ``Retry-After``, nothing half done."""

from __future__ import annotations

import pytest

from gateway.config.errors import ConfigError
from gateway.config.loader import load_settings
from gateway.config.metrics import MIN_ADMIN_TOKEN_LENGTH
from gateway.redis.client import open_redis
from tests.harness.stack import base_config, body_of, start_stack

TOKEN = "admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("section", "problem"), [
    ({"ApiToken": " padded-admin-token-000 "}, "Admin.ApiToken: must not start or end with spaces"),
    ({"ApiToken": 5.5}, "Admin.ApiToken: must be a string"),
    ({"ApiToken": "short"}, f"Admin.ApiToken: must be at least {MIN_ADMIN_TOKEN_LENGTH} characters long"),
])
def test_an_unusable_admin_token_is_refused_with_its_path(section, problem) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(data=base_config(Admin=section), environ={})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_the_admin_token_binds_from_the_file_and_the_environment() -> None:
    assert load_settings(data=base_config(), environ={}).settings.admin.api_token == ""
    loaded = load_settings(data=base_config(Admin={"ApiTokn": "x"}), environ={"Admin__ApiToken": TOKEN})
    assert loaded.settings.admin.api_token == TOKEN
    assert any(w.startswith("Admin.ApiTokn") and "ApiToken" in w for w in loaded.warnings), loaded.warnings


@pytest.mark.redis
async def test_the_admin_api_answers_503_while_the_store_is_down(redis_proc) -> None:
    client = open_redis(redis_proc.url)
    config = base_config(cap=1)
    config["Admin"] = {"ApiToken": TOKEN}
    stack = await start_stack(client, config=config)
    try:
        redis_proc.stop()
        calls = (("GET", "/queue", None), ("POST", "/dispatch/pause", None), ("POST", "/dispatch/resume", None),
                 ("PUT", "/capacity", {"maxConcurrentSessions": 3}), ("POST", "/sessions/abc/end", None),
                 ("DELETE", "/requests/abc", None))
        for method, path, body in calls:
            response = await stack.call(method, "/api/admin" + path, body, headers=AUTH)
            assert response.code == 503, (path, response.code, response.body)
            assert int(response.headers["Retry-After"]) > 0 and body_of(response)["message"]
        redis_proc.start()
        metrics = (await stack.call("GET", "/metrics")).body.decode()
        assert f'iqra_gateway_redis_errors_total{{component="admin"}} {float(len(calls))}' in metrics
        view = await stack.call("GET", "/api/admin/queue", headers=AUTH)
        assert view.code == 200, view.body
        assert body_of(view)["paused"] is False and body_of(view)["recentChanges"] == []
    finally:
        await stack.close()
        await client.aclose()
