"""No gateway command runs on a Redis older than its scripts need (7.0: ``PEXPIRE ... GT``).

At start-up an old Redis is a configuration error. When Redis cannot be reached at start-up, the gateway
says so once and starts without it; the version is then checked when Redis first answers, and an old one is
refused while serving (503: every use of the pool fails as if Redis were down) and checked again later.

No Redis 6 is installed here, so the old server is the real one behind :class:`VersionProxy`, which rewrites
the version line of ``INFO``.
"""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config.errors import ConfigError
from gateway.redis.client import MIN_REDIS_VERSION, check_redis_version, open_redis, run_script
from gateway.redis.gate import RECHECK_SECONDS, RedisGate, RedisTooOld
from tests.harness.redis_process import free_port
from tests.harness.redis_version_proxy import VersionProxy

pytestmark = pytest.mark.redis

UNREACHABLE = "is unreachable"
BACK = "answers now"


@pytest.fixture
async def client(redis_url):
    made = open_redis(redis_url)
    yield made
    await made.aclose()


@pytest.fixture
async def proxy(redis_server):
    """A proxy (not yet listening) on a free port in front of the session's Redis, reporting 6.2.14."""
    made = VersionProxy(free_port(), redis_server.port, "6.2.14")
    yield made
    await made.close()


@pytest.fixture(autouse=True)
def info_logs(caplog):
    caplog.set_level(logging.INFO, logger="gateway.redis.client")


def messages(caplog, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if needle in r.getMessage()]


async def test_the_installed_redis_is_new_enough(client, caplog):
    info = await client.info("server")
    assert tuple(int(p) for p in info["redis_version"].split(".")[:2]) >= MIN_REDIS_VERSION
    await check_redis_version(client)
    assert client.connection_pool.gate.verified
    assert not messages(caplog, UNREACHABLE) and not messages(caplog, BACK)


@pytest.mark.parametrize("version", ["6.2.14", "5.0.7"])
async def test_an_older_redis_at_start_up_is_a_configuration_error_that_says_what_is_needed(proxy, version):
    proxy.version = version
    await proxy.start()
    old = open_redis(f"redis://127.0.0.1:{proxy.port}/0")
    try:
        with pytest.raises(ConfigError) as caught:
            await check_redis_version(old)
    finally:
        await old.aclose()
    [problem] = caught.value.problems
    assert f"version {version}" in problem and "Redis 7.0 or newer" in problem


async def test_an_unreachable_redis_at_start_up_is_said_once_without_its_password(caplog):
    unreachable = open_redis(f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    try:
        await check_redis_version(unreachable)  # no exception: the gateway starts without the store
        for _ in range(20):
            with pytest.raises(RedisConnectionError):
                await unreachable.ping()
    finally:
        await unreachable.aclose()
    [said] = messages(caplog, UNREACHABLE)
    assert said.levelno == logging.WARNING
    text = said.getMessage()
    assert "(connection refused); starting without the store: requests get 503 until it answers" in text
    assert "redis://:***@127.0.0.1:" in text and "s3cret" not in caplog.text


async def test_the_version_is_checked_when_redis_first_answers_and_that_is_said_once(redis_server, caplog):
    port = free_port()
    late = open_redis(f"redis://127.0.0.1:{port}/0")
    proxy = VersionProxy(port, redis_server.port, None)  # an honest path to the real (new) Redis
    try:
        await check_redis_version(late)
        assert not late.connection_pool.gate.verified
        await proxy.start()
        for _ in range(3):
            assert await late.ping()
        assert late.connection_pool.gate.verified
    finally:
        await late.aclose()
        await proxy.close()
    [back] = messages(caplog, BACK)
    assert back.levelno == logging.INFO and f"127.0.0.1:{port}" in back.getMessage()


async def test_an_old_redis_found_while_serving_is_refused_like_an_unreachable_one(proxy, clock, caplog):
    late = open_redis(f"redis://127.0.0.1:{proxy.port}/0")
    late.connection_pool.gate = RedisGate(f"redis://127.0.0.1:{proxy.port}/0", clock=clock)
    script = late.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
    try:
        await check_redis_version(late)  # nothing listens yet: starts without the store
        await proxy.start()  # an old Redis appears
        for _ in range(20):  # refused on every path: redis-py's commands and the gateway's own script runner
            with pytest.raises(RedisTooOld):
                await late.ping()
            with pytest.raises(RedisTooOld):
                await run_script(late, script, ["refused-key"], ["x"])
        [refused] = messages(caplog, "Requests get 503")
        assert refused.levelno == logging.ERROR
        assert "is version 6.2.14; the gateway needs Redis 7.0 or newer" in refused.getMessage()
        proxy.version = None  # upgraded in place
        with pytest.raises(RedisTooOld):  # not asked again before the re-check is due
            await late.ping()
        clock.advance(RECHECK_SECONDS)
        assert await run_script(late, script, ["served-key"], ["y"])
        assert await late.get("refused-key") is None  # nothing ran on the old Redis
    finally:
        await late.delete("served-key")
        await late.aclose()
    assert len(messages(caplog, "Requests get 503")) == 1
    [back] = messages(caplog, BACK)
    assert "(version 7." in back.getMessage() or "(version 8." in back.getMessage()


async def test_the_embedded_store_is_not_asked():
    embedded = open_redis(None)
    try:
        await check_redis_version(embedded)  # fakeredis: nothing to refuse
    finally:
        await embedded.aclose()
