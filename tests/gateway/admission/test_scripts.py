"""The admission Lua scripts as scripts: their contract headers, cjson, NOSCRIPT recovery, round trips.

Everything that talks to a store runs on a real Redis and on the embedded store.
"""

from __future__ import annotations

import asyncio
import logging
import re
from importlib import resources

import fakeredis
import pytest
import redis.exceptions

from gateway.admission.store import AdmissionStore, Caps, Outcome
from gateway.redis.client import open_redis, redact_url
from tests.harness.fake_clock import FakeClock
from tests.harness.redis_process import RedisProcess, free_port

LUA_DIR = resources.files("gateway.admission") / "lua"
OPERATIONS = ["activate", "admit", "claim", "end_session", "extend_lease", "reap", "release_lease", "remove",
              "requeue_front", "set_outcome", "status"]
SHARED_KEYS = 13


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "embedded"])
async def client(request):
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    client = open_redis(url)
    yield client
    await client.aclose()


def split_header(text: str) -> tuple[str, str]:
    """Return (leading comment block, code without comments)."""
    lines = text.splitlines()
    header = []
    for line in lines:
        if not line.startswith("--"):
            break
        header.append(line)
    code = "\n".join(line.split("--", 1)[0] for line in lines[len(header):])
    return "\n".join(header), code


def used(pattern: str, code: str) -> set[int]:
    return {int(n) for n in re.findall(pattern + r"\[(\d+)\]", code)}


def documented(pattern: str, header: str) -> set[int]:
    return {int(n) for n in re.findall(r"^--\s+" + pattern + r"\[(\d+)\]", header, re.MULTILINE)}


def test_every_operation_has_a_script_and_nothing_else_is_shipped():
    # The session hub's presence scripts share the folder; they have their own header test.
    shipped = sorted(p.name[:-4] for p in LUA_DIR.iterdir()
                     if p.name.endswith(".lua") and not p.name.startswith("presence_"))
    # snapshot.lua (the admin API's read) runs alone, without the prelude.
    assert shipped == sorted(OPERATIONS + ["lib_store", "snapshot"])


def test_the_snapshot_script_documents_every_key_and_argument_it_uses():
    header, code = split_header((LUA_DIR / "snapshot.lua").read_text())
    assert used("KEYS", code) == documented("KEYS", header) == set(range(1, 10))
    assert used("ARGV", code) == documented("ARGV", header) == {1}
    assert "Returns" in header


def test_shared_prelude_documents_every_key_and_argument_it_uses():
    header, code = split_header((LUA_DIR / "lib_store.lua").read_text())
    assert used("KEYS", code) == documented("KEYS", header) == set(range(1, SHARED_KEYS + 1))
    assert used("ARGV", code) == documented("ARGV", header) == {1}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_script_header_lists_every_key_argument_and_the_return_shape(operation):
    header, code = split_header((LUA_DIR / f"{operation}.lua").read_text())
    own_keys = used("KEYS", code) - set(range(1, SHARED_KEYS + 1))
    assert own_keys <= documented("KEYS", header)
    assert used("ARGV", code) | {1} <= documented("ARGV", header)
    # documented arguments are contiguous, so the Python side can't skip one unnoticed
    argv = documented("ARGV", header)
    assert argv == set(range(1, max(argv) + 1))
    assert "Returns" in header and "Complexity" in header


async def test_cjson_is_available_and_round_trips(client):
    doc = '{"c":"camp\\u00fc","r":"id-1","s":-3}'
    reply = await client.eval(
        "local t = cjson.decode(ARGV[1]); local back = cjson.decode(cjson.encode(t));"
        " return {back.c, back.r, back.s}", 0, doc)
    assert reply == ["campü".encode(), b"id-1", -3]


async def test_script_flush_then_call_again_reloads(client):
    store = AdmissionStore(client, clock=FakeClock())
    caps = Caps(global_cap=1, campaign_caps={})
    first = await store.admit(request_id="a", campaign="c", data={}, caps=caps, pending_lease_seconds=5,
                              max_queue_length=5)
    await client.script_flush()
    second = await store.admit(request_id="b", campaign="c", data={}, caps=caps, pending_lease_seconds=5,
                               max_queue_length=5)
    assert (first.outcome, second.outcome, second.position) == (Outcome.ADMITTED, Outcome.QUEUED, 1)
    admit_script = store._scripts["admit"]
    assert await client.script_exists(admit_script.sha) == [True]


class CommandCounter:
    """Wrap the client's connections' ``send_command`` to record every command sent (whichever path of the
    client sends it: redis-py's ``execute_command`` or the gateway's direct script runner)."""

    def __init__(self, client, monkeypatch) -> None:
        self.commands: list[str] = []
        connection_class = client.connection_pool.connection_class
        original = connection_class.send_command

        async def counting(connection, *args, **options):
            name = str(args[0]).upper()
            if name == "SCRIPT" and len(args) > 1:
                name = f"SCRIPT {str(args[1]).upper()}"
            self.commands.append(name)
            return await original(connection, *args, **options)

        monkeypatch.setattr(connection_class, "send_command", counting)


async def test_each_admit_decision_is_one_round_trip(client, monkeypatch):
    store = AdmissionStore(client, clock=FakeClock())
    full = Caps(global_cap=0, campaign_caps={})
    await store.admit(request_id="warm", campaign="c", data={}, caps=full, pending_lease_seconds=5,
                      max_queue_length=9)  # loads the script once
    counter = CommandCounter(client, monkeypatch)

    queued = await store.admit(request_id="q", campaign="c", data={}, caps=full, pending_lease_seconds=5,
                               max_queue_length=9)
    assert queued.outcome is Outcome.QUEUED and counter.commands == ["EVALSHA"]
    # a decision that also claims older entries is still one round trip
    counter.commands.clear()
    result = await store.admit(request_id="n", campaign="c", data={}, caps=Caps(global_cap=3, campaign_caps={}),
                               pending_lease_seconds=5, max_queue_length=9)
    assert [e.request_id for e in result.claimed] == ["warm", "q"] and result.outcome is Outcome.ADMITTED
    assert counter.commands == ["EVALSHA"]
    # after SCRIPT FLUSH the same call transparently reloads: EVALSHA (NOSCRIPT), SCRIPT LOAD, EVALSHA
    await client.script_flush()
    counter.commands.clear()
    await store.admit(request_id="z", campaign="c", data={}, caps=full, pending_lease_seconds=5, max_queue_length=9)
    assert counter.commands == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]


@pytest.mark.redis
async def test_server_sees_one_client_command_per_admit(redis_url):
    """MONITOR on the real server: the only command from the client is one EVALSHA (the rest is Lua)."""
    client = open_redis(redis_url)
    observer = open_redis(redis_url)
    try:
        store = AdmissionStore(client, clock=FakeClock())
        caps = Caps(global_cap=1, campaign_caps={})
        await store.admit(request_id="warm", campaign="c", data={}, caps=caps, pending_lease_seconds=5,
                          max_queue_length=9)  # loads the script and opens the connection
        async with observer.monitor() as monitor:
            await store.admit(request_id="r", campaign="c", data={}, caps=caps, pending_lease_seconds=5,
                              max_queue_length=9)
            await client.echo("end-of-test-marker")

            async def until_marker() -> list[dict]:
                seen = []
                while (command := await monitor.next_command())["command"] != "ECHO end-of-test-marker":
                    seen.append(command)
                return seen

            seen = await asyncio.wait_for(until_marker(), 10)
        from_client = [c["command"].split()[0] for c in seen if c["client_type"] != "lua"]
        assert from_client == ["EVALSHA"]
        assert any(c["client_type"] == "lua" for c in seen)  # the work happened inside the script
    finally:
        await client.aclose()
        await observer.aclose()


def test_constructing_a_store_talks_to_no_server():
    client = open_redis(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    store = AdmissionStore(client)
    assert set(store._scripts) == set(OPERATIONS)


@pytest.mark.redis
async def test_ping_raises_when_the_store_is_unreachable():
    server = RedisProcess()
    server.start()
    client = open_redis(server.url)
    try:
        store = AdmissionStore(client)
        await store.ping()
        server.stop()
        with pytest.raises(redis.exceptions.ConnectionError):
            await store.ping()
    finally:
        await client.aclose()
        server.close()


@pytest.mark.redis
async def test_open_redis_logs_which_store_is_used(caplog, redis_server):
    caplog.set_level(logging.INFO, logger="gateway.redis.client")
    embedded = open_redis(None)
    real = open_redis(redis_server.url)
    try:
        assert isinstance(embedded, fakeredis.FakeAsyncRedis)
        assert not isinstance(real, fakeredis.FakeAsyncRedis)
        await embedded.ping()
        await real.ping()
    finally:
        await embedded.aclose()
        await real.aclose()
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.redis.client"]
    assert any("EMBEDDED" in m for m in messages)
    assert any(redis_server.url in m for m in messages)


def test_redact_url_hides_the_password():
    assert redact_url("redis://user:s3cret@host:6380/1") == "redis://user:***@host:6380/1"
    assert redact_url("redis://:s3cret@host/0") == "redis://:***@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
