"""/sessionHub end to end: real gateway, real simulator, real Redis, real WebSocket clients.

The hub client here is a minimal JSON-protocol SignalR client over Tornado's WebSocket client, so each
test sees exactly what goes over the wire. Waits are on messages with timeouts, never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.live.hub import UNKNOWN_ID_MESSAGE
from gateway.model.departures import Departure, departure_message
from signalr import HubOptions
from tests.harness.paths import SESSION_HUB_CLIENTS
from tests.harness.session_hub import FAST, TIMEOUT, HubClient, fill_and_queue
from tests.harness.stack import Stack, base_config, conversation_id_of, start_hub_stack

pytestmark = pytest.mark.redis

LEFT_MESSAGE = departure_message(Departure.LEFT, register_timeout=60, disconnect_grace=45)

async def test_register_ready_positions_and_replay(redis_client: aioredis.Redis) -> None:
    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    clients: list[HubClient] = []
    try:
        conversations, queued = await fill_and_queue(stack, 3)
        for i, rid in enumerate(queued[:2]):
            client = await HubClient.connect(stack.base_url)
            clients.append(client)
            assert await client.register(rid) == {"status": "queued", "queuePosition": i + 1}
        first, second = clients
        # The webhook frees a slot: the first gets SessionReady, the second moves to 1.
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await stack.end(conversations[0])).code == 200
        _, ready = await first.next_event("SessionReady")
        assert loop.time() - started < 1.0
        assert ready["webSocketUrl"].startswith("ws")
        update = await second.position(1)
        assert set(update) == {"queuePosition", "estimatedWaitSeconds"}
        # The third never connected before its session was ready: Register replays SessionReady.
        assert (await stack.end(conversations[1])).code == 200
        await asyncio.wait_for(stack.outcome(queued[1]), TIMEOUT)
        assert (await stack.end(conversation_id_of(ready["webSocketUrl"]))).code == 200
        await asyncio.wait_for(stack.outcome(queued[2]), TIMEOUT)
        late = await HubClient.connect(stack.base_url)
        clients.append(late)
        assert await late.register(queued[2]) == {"status": "ready", "queuePosition": None}
        _, replayed = await late.next_event("SessionReady")
        assert replayed["webSocketUrl"] == stack.outcome(queued[2]).result().web_socket_url
    finally:
        for client in clients:
            await client.close()
        await stack.close()


async def test_unknown_and_bad_ids_get_hub_errors(redis_client: aioredis.Redis) -> None:
    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    client = await HubClient.connect(stack.base_url)
    try:
        reply = await client.invoke("Register", "no-such-request")
        assert reply["error"] == ("An unexpected error occurred invoking 'Register' on the server. "
                                  f"HubException: {UNKNOWN_ID_MESSAGE}")
        reply = await client.invoke("Register", "")
        assert "HubException: uniqueRequestId must be a non-empty string" in reply["error"]
        reply = await client.invoke("Register", 42)
        assert reply["error"].startswith("Failed to invoke 'Register'")
        # The connection survives its errors.
        _, queued = await fill_and_queue(stack, 1)
        assert await client.register(queued[0]) == {"status": "queued", "queuePosition": 1}
    finally:
        await client.close()
        await stack.close()


async def test_leave_moves_the_others_up(redis_client: aioredis.Redis) -> None:
    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    clients = [await HubClient.connect(stack.base_url) for _ in range(3)]
    try:
        _, queued = await fill_and_queue(stack, 3)
        for client, rid in zip(clients, queued, strict=True):
            await client.register(rid)
        reply = await clients[0].invoke("Leave", queued[0])
        assert "error" not in reply
        await clients[1].position(1)
        await clients[2].position(2)
        # The request reads "failed" with the reason, and a later Register hears it at once.
        left = await stack.gateway.service.status(queued[0])
        assert (left.status, left.message) == ("failed", LEFT_MESSAGE)
        assert await clients[0].register(queued[0]) == {"status": "failed", "queuePosition": None}
        assert await clients[0].next_event("SessionFailed") == ("SessionFailed", {"message": LEFT_MESSAGE})
    finally:
        for client in clients:
            await client.close()
        await stack.close()


async def test_unregistered_entry_is_reaped_and_reconnect_keeps_place(redis_client: aioredis.Redis) -> None:
    config = base_config(Queue={"RegisterTimeoutSeconds": 1, "DisconnectGraceSeconds": 2})
    stack = await start_hub_stack(redis_client, hub_tuning=FAST, config=config)
    clients: list[HubClient] = []
    try:
        _, queued = await fill_and_queue(stack, 4)
        # queued[0] never registers; queued[1] registers then its socket dies and it comes back;
        # queued[2] registers then vanishes for good; queued[3] stays.
        for rid in queued[1:]:
            client = await HubClient.connect(stack.base_url)
            clients.append(client)
            await client.register(rid)
        comeback, vanished, stayer = clients
        comeback.kill()
        vanished.kill()
        # The never-registered entry goes after ~1 s: everyone moves up one place.
        await stayer.position(3)
        again = await HubClient.connect(stack.base_url)
        clients.append(again)
        assert await again.register(queued[1]) == {"status": "queued", "queuePosition": 1}
        # The vanished one goes after its 2 s grace; the reconnected client is still first.
        await stayer.position(2)
        status = await stack.gateway.service.status(queued[1])
        assert (status.status, status.position) == ("queued", 1)
        # Both read "failed", each with its own reason a person can act on.
        vanished_status = await stack.gateway.service.status(queued[2])
        assert (vanished_status.status, vanished_status.message) == ("failed", departure_message(
            Departure.DISCONNECTED, register_timeout=1, disconnect_grace=2))
        unregistered = await stack.gateway.service.status(queued[0])
        assert (unregistered.status, unregistered.message) == ("failed", departure_message(
            Departure.UNREGISTERED, register_timeout=1, disconnect_grace=2))
    finally:
        for client in clients:
            await client.close()
        await stack.close()


async def test_cors_origins_and_one_client_failure(redis_client: aioredis.Redis) -> None:
    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    try:
        allowed = await stack.call("POST", "/sessionHub/negotiate?negotiateVersion=1", raw=b"",
                                   headers={"Origin": "https://shop.example"})
        assert allowed.headers.get("Access-Control-Allow-Origin") == "https://shop.example"
        other = await stack.call("POST", "/sessionHub/negotiate?negotiateVersion=1", raw=b"",
                                 headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
        _, queued = await fill_and_queue(stack, 2)
        broken = await HubClient.connect(stack.base_url)
        healthy = await HubClient.connect(stack.base_url)
        await broken.register(queued[0])
        await healthy.register(queued[1])
        broken.kill()
        assert (await healthy.invoke("Leave", queued[1])).get("error") is None
        await healthy.close()
        await broken.close()
    finally:
        await stack.close()


# -- the official client under Node -----------------------------------------------------------------

INTEROP_DIR = SESSION_HUB_CLIENTS


class NodeWidget:
    """``tests/gateway/live/interop/widget_flow.js`` as a subprocess; its JSON lines are its events."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, base_url: str, transport: str, protocol: str) -> NodeWidget:
        assert (INTEROP_DIR / "node_modules" / "@microsoft" / "signalr").is_dir(), \
            "run `npm ci` in tests/gateway/live/interop (scripts/test.sh does)"
        proc = await asyncio.create_subprocess_exec(
            "node", str(INTEROP_DIR / "widget_flow.js"), base_url, transport, protocol,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def next(self, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                stderr = await self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"node exited before {event!r}; saw {self.seen}; stderr {stderr.decode()}")
            message = json.loads(line)
            self.seen.append(message)
            if message["event"] == "error":
                raise AssertionError(f"node failed: {message['message']}")
            if message["event"] == event:
                return message

    async def finish(self) -> int:
        if self.proc.returncode is None:
            try:
                return await asyncio.wait_for(self.proc.wait(), TIMEOUT)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode or 0


@pytest.mark.interop
@pytest.mark.parametrize(("transport", "protocol"), [
    ("WebSockets", "json"), ("WebSockets", "messagepack"), ("ServerSentEvents", "json"),
    ("LongPolling", "json"), ("LongPolling", "messagepack"),
])
async def test_official_client_widget_flow(redis_client: aioredis.Redis, transport: str, protocol: str) -> None:
    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    ahead = await HubClient.connect(stack.base_url)
    widget: NodeWidget | None = None
    try:
        conversations, queued = await fill_and_queue(stack, 1)
        await ahead.register(queued[0])
        widget = await NodeWidget.start(stack.base_url, transport, protocol)
        response = await widget.next("response")
        assert response["status"] == 202 and response["data"]["queuePosition"] == 2
        registered = await widget.next("registered")
        assert registered["result"] == {"status": "queued", "queuePosition": 2}
        error = await widget.next("register_error")
        assert error["message"].endswith(f"HubException: {UNKNOWN_ID_MESSAGE}")
        # A call ends: the client ahead is served and the widget learns its new place live.
        assert (await stack.end(conversations[0])).code == 200
        await ahead.next_event("SessionReady")
        position = await widget.next("position")
        assert position["queuePosition"] == 1
        assert "estimatedWaitSeconds" in position
        # The next call ends: SessionReady within a second of the webhook, then audio.
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await stack.end(conversations[1])).code == 200
        ready = await widget.next("ready")
        assert loop.time() - started < 1.0
        assert ready["webSocketUrl"].startswith("ws://127.0.0.1:")
        audio = await widget.next("audio")
        assert audio["bytes"] > 0
        await widget.next("done")
        assert await widget.finish() == 0
    finally:
        if widget is not None and widget.proc.returncode is None:
            widget.proc.kill()
            await widget.proc.wait()
        await ahead.close()
        await stack.close()


@pytest.mark.interop
async def test_official_client_reconnects_and_keeps_its_place(redis_client: aioredis.Redis) -> None:
    config = base_config(Queue={"DisconnectGraceSeconds": 5})
    stack = await start_hub_stack(redis_client, hub_tuning=FAST, config=config)
    widget: NodeWidget | None = None
    try:
        conversations, _ = await fill_and_queue(stack, 0)
        widget = await NodeWidget.start(stack.base_url, "WebSockets", "json")
        registered = await widget.next("registered")
        assert registered["result"] == {"status": "queued", "queuePosition": 1}
        # Kill the socket under the client (server side, no SignalR Close message).
        server = stack.gateway.session_hub.server
        session = server.sessions[registered["connectionId"]]
        session.connection.abort_transport()
        await widget.next("reconnecting")
        again = await widget.next("registered")
        assert again["again"] is True and again["connectionId"] != registered["connectionId"]
        assert again["result"] == {"status": "queued", "queuePosition": 1}
        assert (await stack.end(conversations[0])).code == 200
        await widget.next("ready")
        await widget.next("done")
    finally:
        if widget is not None and widget.proc.returncode is None:
            widget.proc.kill()
            await widget.proc.wait()
        await stack.close()


# -- the Python clients ---------------------------------------------------------------------------------


async def _python_client_flow(stack: Stack, open_client: Any) -> None:
    """Shared flow: a client second in line registers, sees position 1 live, then SessionReady."""
    conversations, queued = await fill_and_queue(stack, 2)
    ahead = await HubClient.connect(stack.base_url)
    try:
        await ahead.register(queued[0])
        registered, events, close = await open_client(queued[1])
        try:
            assert await asyncio.wait_for(registered, TIMEOUT) == {"status": "queued", "queuePosition": 2}
            assert (await stack.end(conversations[0])).code == 200
            while True:
                name, payload = await asyncio.wait_for(events.get(), TIMEOUT)
                if name == "QueuePositionUpdated" and payload["queuePosition"] == 1:
                    break
            assert (await stack.end(conversations[1])).code == 200
            while True:
                name, payload = await asyncio.wait_for(events.get(), TIMEOUT)
                if name == "SessionReady":
                    assert payload["webSocketUrl"].startswith("ws://")
                    break
        finally:
            await close()
    finally:
        await ahead.close()


@pytest.mark.interop
async def test_pysignalr_client_flow(redis_client: aioredis.Redis) -> None:
    from pysignalr.client import SignalRClient

    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    loop = asyncio.get_running_loop()

    async def open_client(request_id: str) -> tuple[asyncio.Future[Any], asyncio.Queue[tuple[str, Any]], Any]:
        client = SignalRClient(f"{stack.base_url}/sessionHub")
        registered: asyncio.Future[Any] = loop.create_future()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for name in ("QueuePositionUpdated", "SessionReady", "SessionFailed"):
            async def handler(arguments: list[Any], name: str = name) -> None:
                events.put_nowait((name, arguments[0]))
            client.on(name, handler)

        async def on_result(message: Any) -> None:
            registered.set_result(message.result)

        async def on_open() -> None:
            await client.send("Register", [request_id], on_invocation=on_result)

        client.on_open(on_open)
        task = asyncio.create_task(client.run())

        async def close() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        return registered, events, close

    try:
        await _python_client_flow(stack, open_client)
    finally:
        await stack.close()


@pytest.mark.interop
async def test_signalrcore_client_flow(redis_client: aioredis.Redis) -> None:
    from signalrcore.hub_connection_builder import HubConnectionBuilder

    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    loop = asyncio.get_running_loop()

    async def open_client(request_id: str) -> tuple[asyncio.Future[Any], asyncio.Queue[tuple[str, Any]], Any]:
        hub = HubConnectionBuilder().with_url(f"{stack.base_url}/sessionHub").build()
        registered: asyncio.Future[Any] = loop.create_future()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        opened = asyncio.Event()
        for name in ("QueuePositionUpdated", "SessionReady", "SessionFailed"):
            hub.on(name, lambda arguments, name=name: loop.call_soon_threadsafe(
                events.put_nowait, (name, arguments[0])))
        hub.on_open(lambda: loop.call_soon_threadsafe(opened.set))
        await asyncio.to_thread(hub.start)
        await asyncio.wait_for(opened.wait(), TIMEOUT)
        hub.send("Register", [request_id],
                 on_invocation=lambda message: loop.call_soon_threadsafe(registered.set_result, message.result))

        async def close() -> None:
            await asyncio.to_thread(hub.stop)

        return registered, events, close

    try:
        await _python_client_flow(stack, open_client)
    finally:
        await stack.close()


async def test_failed_session_is_delivered_live_and_replayed(redis_client: aioredis.Redis) -> None:
    from gateway.queue.dispatcher import SESSION_FAILED_MESSAGE

    stack = await start_hub_stack(redis_client, hub_tuning=FAST)
    live = await HubClient.connect(stack.base_url)
    late: HubClient | None = None
    try:
        conversations, queued = await fill_and_queue(stack, 1)
        await live.register(queued[0])
        assert (await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "http400"})).code == 200  # not retried
        assert (await stack.end(conversations[0])).code == 200
        _, failure = await live.next_event("SessionFailed")
        assert failure == {"message": SESSION_FAILED_MESSAGE}
        late = await HubClient.connect(stack.base_url)
        assert await late.register(queued[0]) == {"status": "failed", "queuePosition": None}
        _, replayed = await late.next_event("SessionFailed")
        assert replayed == {"message": SESSION_FAILED_MESSAGE}
    finally:
        await live.close()
        if late is not None:
            await late.close()
        await stack.close()


async def test_a_client_that_polls_the_status_endpoint_keeps_its_place(redis_client: aioredis.Redis) -> None:
    # The REST polling fallback holds no hub connection; its polls are what shows it is still there.
    config = base_config(Queue={"RegisterTimeoutSeconds": 1, "DisconnectGraceSeconds": 1})
    stack = await start_hub_stack(redis_client, hub_tuning=FAST, config=config)
    stayer = None
    polls = 0
    stop_polling = asyncio.Event()

    async def poll(request_id: str) -> None:
        nonlocal polls
        while not stop_polling.is_set():
            response = await stack.call("GET", f"/api/session/status/{request_id}")
            assert response.code == 200
            assert json.loads(response.body)["status"] == "queued"
            polls += 1
            try:  # the client's own polling cadence, not a synchronisation
                await asyncio.wait_for(stop_polling.wait(), 0.2)
            except TimeoutError:
                pass

    try:
        _, (poller, silent, registered) = await fill_and_queue(stack, 3)
        stayer = await HubClient.connect(stack.base_url)
        await stayer.register(registered)
        polling = asyncio.create_task(poll(poller))
        # The silent entry (no poll, no hub) goes after the register timeout: the hub client moves up.
        await asyncio.wait_for(stayer.position(2), TIMEOUT)
        # Keep polling well past both limits (1 s each): the poller must still be first in line.
        async def polled_past_both_limits() -> None:
            while polls < 15:  # 15 polls 0.2 s apart: about 3 s, three times either limit
                await asyncio.sleep(0.05)

        await asyncio.wait_for(polled_past_both_limits(), TIMEOUT)
        status = await stack.gateway.service.status(poller)
        assert (status.status, status.position) == ("queued", 1)
        # Once the polls stop, the grace runs out and it leaves the queue like any vanished client.
        stop_polling.set()
        await polling
        await asyncio.wait_for(stayer.position(1), TIMEOUT)
        assert (await stack.gateway.service.status(poller)).status == "failed"
    finally:
        if stayer is not None:
            await stayer.close()
        await stack.close()


@pytest.mark.parametrize(("worker_prefix", "expected"), [("", "gw1."), ("0.", "gw1.0.")])
async def test_instance_id_starts_every_connection_id_and_token(redis_client: aioredis.Redis, worker_prefix: str,
                                                                expected: str) -> None:
    """``Instance.Id`` goes before a ``--processes`` worker's own prefix; the prefixed token still works."""
    tuning = replace(FAST, hub_options=replace(FAST.hub_options or HubOptions(), connection_id_prefix=worker_prefix))
    stack = await start_hub_stack(redis_client, hub_tuning=tuning, config=base_config(Instance={"Id": "gw1"}))
    try:
        for version in ("", "?negotiateVersion=1"):
            answer = json.loads((await stack.call("POST", "/sessionHub/negotiate" + version, raw=b"")).body)
            assert answer["connectionId"].startswith(expected), answer
            assert answer.get("connectionToken", expected).startswith(expected), answer
        _, queued = await fill_and_queue(stack, 1)
        client = await HubClient.connect(stack.base_url)
        assert client.token.startswith(expected)
        assert (await client.register(queued[0]))["status"] == "queued"
        await client.close()
    finally:
        await stack.close()
