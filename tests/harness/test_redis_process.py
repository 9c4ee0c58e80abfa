"""The test infrastructure's own redis-server wrapper: outage tests depend on stop/start working."""

import pytest
import redis

from tests.harness.redis_process import RedisProcess


def test_a_stopped_server_refuses_and_a_restarted_one_answers_on_the_same_port():
    server = RedisProcess()
    server.start()
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=2)
        client.set("k", "v")
        assert client.get("k") == b"v"
        server.stop()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.start()
        assert client.ping() is True
        # Nothing is persisted: a restart is a clean server, as the gateway must expect.
        assert client.get("k") is None
        client.close()
    finally:
        server.close()
