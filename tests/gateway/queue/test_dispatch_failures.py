"""How a queued request's platform call can fail, and what the dispatcher does about it (real gateway,
real Redis or the embedded store, the platform simulator).

A failure that cannot succeed on retry ends the entry at once; one that certainly created no session is
retried ``Concurrency.MaxDispatchAttempts`` times; one that may have created a session is never retried.
In every case the slot goes back and the next client is served.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest
import ujson
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from gateway.admission.store import Caps, Outcome
from gateway.model.departures import Departure, departure_message
from gateway.platform.errors import FailureKind, PlatformError
from gateway.queue.events import SessionFailed, SessionReady
from ratelimit import Policy, Rule
from simulator.app import make_simulator_app
from tests.harness.stack import base_config, body_of, conversation_id_of, session_body, start_stack

TIMEOUT = 15
INITIATE_PATH = "/websession/initiate"


def initiates_for(stack, client: str) -> int:
    """Initiate requests the platform received for the client identifier ``client``."""
    return sum(1 for r in stack.sim.requests if r.path.endswith(INITIATE_PATH)
               and ujson.loads(r.body)["ClientIdentifier"].startswith(f"{client}_"))


async def fill(stack, *waiting: str) -> tuple[str, list[str]]:
    """One admitted session (cap 1), then a queued request per name in ``waiting``."""
    first = body_of(await stack.request_session(session_body(clientIdentifier="first")))
    ids = []
    for name in waiting:
        queued = body_of(await stack.request_session(session_body(clientIdentifier=name)))
        assert "queuePosition" in queued, queued
        ids.append(queued["uniqueRequestId"])
    return conversation_id_of(first["webSocketUrl"]), ids


def watch_initiates(stack, on_failure=None) -> list[PlatformError]:
    """Record the platform client's failures (and run ``on_failure`` on each, before it is raised)."""
    platform = stack.gateway.platform
    original = platform.initiate
    failures: list[PlatformError] = []

    async def watched(*args, **kwargs):
        try:
            return await original(*args, **kwargs)
        except PlatformError as exc:
            failures.append(exc)
            if on_failure is not None:
                await on_failure(exc)
            raise

    platform.initiate = watched
    return failures


async def pending_and_active(stack) -> tuple[int, int]:
    counts = await stack.gateway.store.counts()
    return counts["pending"], counts["active"]


@pytest.fixture
def make_stack(stack_factory):
    """A stack with a cap of 1 and these ``Concurrency`` settings."""

    async def make(**concurrency):
        config = base_config(cap=1)
        config["Concurrency"].update(concurrency)
        return await stack_factory(config=config)

    return make


async def test_a_4xx_fails_the_entry_at_once_and_the_next_client_is_served(make_stack):
    stack = await make_stack()
    conversation, (refused, served) = await fill(stack, "refused", "served")
    await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "http400"})
    assert (await stack.end(conversation)).code == 200
    assert isinstance(await asyncio.wait_for(stack.outcome(refused), TIMEOUT), SessionFailed)
    assert isinstance(await asyncio.wait_for(stack.outcome(served), TIMEOUT), SessionReady)
    assert (initiates_for(stack, "refused"), initiates_for(stack, "served")) == (1, 1)
    assert await pending_and_active(stack) == (0, 1)


async def test_a_5xx_is_retried_max_dispatch_attempts_times_then_the_entry_fails(make_stack):
    stack = await make_stack()  # MaxDispatchAttempts: 3 by default
    conversation, (failing, served) = await fill(stack, "failing", "served")
    await stack.sim_call("POST", "/_sim/fail", {"count": 3, "mode": "http500"})
    assert (await stack.end(conversation)).code == 200
    assert isinstance(await asyncio.wait_for(stack.outcome(failing), TIMEOUT), SessionFailed)
    assert initiates_for(stack, "failing") == 3
    assert isinstance(await asyncio.wait_for(stack.outcome(served), TIMEOUT), SessionReady)
    assert await pending_and_active(stack) == (0, 1)


async def test_a_5xx_that_clears_within_the_attempts_gets_the_client_one_session(make_stack):
    stack = await make_stack(MaxDispatchAttempts=2)
    conversation, (retried,) = await fill(stack, "retried")
    await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "http500"})
    assert (await stack.end(conversation)).code == 200
    assert isinstance(await asyncio.wait_for(stack.outcome(retried), TIMEOUT), SessionReady)
    assert initiates_for(stack, "retried") == 2
    assert len(stack.sim.live_calls) == 2  # the first client's and this one's: one session each


async def test_connection_refused_is_retried_and_the_client_is_served_once_the_platform_listens(make_stack):
    stack = await make_stack()
    conversation, (waiting,) = await fill(stack, "waiting")
    port = urlsplit(stack.sim_url).port
    stack.sim_server.stop()  # the platform no longer listens: connections are refused
    revived: list[HTTPServer] = []

    async def listen_again(exc: PlatformError) -> None:
        if not revived:
            server = HTTPServer(make_simulator_app(stack.sim))
            server.add_sockets(bind_sockets(port, "127.0.0.1"))
            revived.append(server)

    failures = watch_initiates(stack, listen_again)
    try:
        assert (await stack.end(conversation)).code == 200
        assert isinstance(await asyncio.wait_for(stack.outcome(waiting), TIMEOUT), SessionReady)
    finally:
        for server in revived:
            server.stop()
            await server.close_all_connections()
    assert [(f.code, f.kind) for f in failures] == [(PlatformError.UNREACHABLE, FailureKind.RETRYABLE)]
    assert initiates_for(stack, "waiting") == 1


async def test_connection_refused_on_every_attempt_fails_the_entry_and_frees_the_slot(make_stack):
    stack = await make_stack(MaxDispatchAttempts=2)
    conversation, (waiting,) = await fill(stack, "waiting")
    stack.sim_server.stop()
    failures = watch_initiates(stack)
    assert (await stack.end(conversation)).code == 200
    assert isinstance(await asyncio.wait_for(stack.outcome(waiting), TIMEOUT), SessionFailed)
    assert [f.kind for f in failures] == [FailureKind.RETRYABLE] * 2
    await stack.gateway.dispatcher.wait_idle()
    assert await pending_and_active(stack) == (0, 0)


async def test_a_timeout_after_sending_is_not_retried_and_the_platform_sees_one_initiate(make_stack):
    stack = await make_stack()
    conversation, (timed_out, served) = await fill(stack, "timed_out", "served")
    # The platform creates the session but answers after the gateway's 2 s request timeout.
    await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "slow"})
    failures = watch_initiates(stack)
    assert (await stack.end(conversation)).code == 200
    assert isinstance(await asyncio.wait_for(stack.outcome(timed_out), TIMEOUT), SessionFailed)
    assert [(f.code, f.kind) for f in failures] == [(PlatformError.TIMEOUT, FailureKind.AMBIGUOUS)]
    assert initiates_for(stack, "timed_out") == 1  # a retry could have given the client a second session
    assert isinstance(await asyncio.wait_for(stack.outcome(served), TIMEOUT), SessionReady)
    assert await pending_and_active(stack) == (0, 1)


async def test_a_client_that_leaves_between_two_calls_is_not_called_for_again(store_client):
    config = base_config(cap=1)
    config["Security"].update({"RateLimitConcurrency": 3})
    stack = await start_stack(store_client, config=config)
    failed_once, go_on = asyncio.Event(), asyncio.Event()

    async def hold(exc: PlatformError) -> None:
        failed_once.set()
        await go_on.wait()  # the dispatcher is between two calls until the test lets it go on

    try:
        conversation, (leaving, served) = await fill(stack, "leaving", "served")
        await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "http500"})
        watch_initiates(stack, hold)
        assert (await stack.end(conversation)).code == 200
        await asyncio.wait_for(failed_once.wait(), TIMEOUT)
        rule = Rule(policy=Policy.CONCURRENT, subject="client:id:leaving", limit=1)
        unit_key = stack.gateway.protection._limiter.key_for(rule)
        try:
            assert await stack.gateway.service.leave(leaving) is True
            assert await stack.gateway.redis.zcard(unit_key) == 1  # kept: a session might still come
        finally:
            go_on.set()
        assert isinstance(await asyncio.wait_for(stack.outcome(served), TIMEOUT), SessionReady)
        await stack.gateway.dispatcher.wait_idle()
        assert initiates_for(stack, "leaving") == 1
        # No session came of it: its other open connections hear why it ended (it left), as the status says.
        left = departure_message(Departure.LEFT, register_timeout=60, disconnect_grace=45)
        assert stack.outcome(leaving).result() == SessionFailed(request_id=leaving, message=left)
        status = await stack.call("GET", f"/api/session/status/{leaving}")
        assert body_of(status) == {"status": "failed", "queuePosition": None, "message": left}
        assert await pending_and_active(stack) == (0, 1)
        assert await stack.gateway.redis.zcard(unit_key) == 0  # given back when the dispatch ended
    finally:
        await stack.close()


async def test_entries_that_can_never_be_sent_fail_at_once_and_free_their_slots(store_client, clock):
    # The reproduction: two requests that cannot be sent held both slots of a cap-2 gateway, each
    # taking a slot again whenever it reached the front, and the honest client behind them was never served.
    # The clock never moves, so no lease expires: only failing the entries can free the slots.
    stack = await start_stack(store_client, config=base_config(cap=2), clock=clock)
    try:
        admitted = [body_of(await stack.request_session()) for _ in range(2)]
        store = stack.gateway.store
        unsendable = session_body(dynamicVariables={"FirstName": "\ud800"})  # a lone surrogate
        for request_id in ("unsendable", "damaged"):
            queued = await store.admit(request_id=request_id, campaign="CampA",
                                       data={"request": unsendable, "ip": "127.0.0.1"}, caps=Caps(global_cap=0),
                                       pending_lease_seconds=5, max_queue_length=100)
            assert queued.outcome is Outcome.QUEUED
        await stack.gateway.redis.hset(store.keys.entries, "damaged", "{not json")  # unreadable entry data
        honest = body_of(await stack.request_session())
        assert honest["queuePosition"] == 3
        for session in admitted:
            assert (await stack.end(conversation_id_of(session["webSocketUrl"]))).code == 200
        for request_id in ("unsendable", "damaged"):
            assert isinstance(await asyncio.wait_for(stack.outcome(request_id), TIMEOUT), SessionFailed)
        event = await asyncio.wait_for(stack.outcome(honest["uniqueRequestId"]), TIMEOUT)
        assert isinstance(event, SessionReady)
        assert stack.sim.stats()["initiated"] == 3  # the two admitted clients and the honest one
        assert await pending_and_active(stack) == (0, 1)
    finally:
        await stack.close()
