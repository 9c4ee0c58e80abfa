"""Hub layer: method table, binding, exact error strings, streaming, groups, context."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from examples.chat import ChatHub
from signalr import Hub, HubContext, HubError, hub_method
from signalr.hubs.lifetime import InMemoryHubLifetimeManager
from signalr.hubs.methods import BindingError, HubMethodTable, pascal_case
from tests.harness.signalr_server import JsonWs, running


class TableHub(Hub):
    def join_group(self, group: str) -> None: ...

    @hub_method("SendIt")
    def send_message(self, text: str, count: int, ratio: float, flag: bool, data: dict, items: list) -> None: ...

    async def upload(self, first: int, stream: AsyncIterator[int]) -> int:
        return first

    async def ticks(self, n: int) -> AsyncIterator[int]:
        yield n

    def _private(self) -> None: ...


def test_method_table_names() -> None:
    table = HubMethodTable(TableHub)
    assert table.lookup("JoinGroup") is table.lookup("join_group") is table.lookup("JOINGROUP")
    assert table.lookup("SendIt") is not None and table.lookup("send_message") is None
    assert table.lookup("_private") is None and table.lookup("on_connected") is None
    assert table.lookup("ticks").is_streaming  # type: ignore[union-attr]
    upload = table.lookup("Upload")
    assert upload is not None and upload.stream_parameters == ("stream",)
    assert pascal_case("get_connection_id") == "GetConnectionId"


def test_method_table_rejects_case_only_duplicates() -> None:
    class Bad(Hub):
        def ping(self) -> None: ...

        @hub_method("PING")
        def other(self) -> None: ...

    with pytest.raises(ValueError, match="differ only in case"):
        HubMethodTable(Bad)


def test_binding_checks_count_and_types() -> None:
    method = HubMethodTable(TableHub).lookup("SendIt")
    assert method is not None
    assert method.bind(["t", 1, 2, True, {}, []]) == ["t", 1, 2, True, {}, []]
    with pytest.raises(BindingError, match=r"^Invocation provides 1 argument\(s\) but target expects 6.$"):
        method.bind(["t"])
    for bad in (["t", True, 2.0, True, {}, []], [1, 1, 2.0, True, {}, []], ["t", 1, "x", True, {}, []]):
        with pytest.raises(BindingError, match="^Error binding arguments"):
            method.bind(bad)


class Probe(ChatHub):
    events: asyncio.Queue[tuple[str, Any]]
    gate: asyncio.Event

    async def on_connected(self) -> None:
        self.context.items["joined"] = True
        Probe.events.put_nowait(("connected", self.context.connection_id))

    async def on_disconnected(self, exception: BaseException | None) -> None:
        Probe.events.put_nowait(("disconnected", self.context.connection_id))

    async def slow(self, label: str) -> str:
        Probe.events.put_nowait(("start", label))
        await Probe.gate.wait()
        return label

    def quick(self, label: str) -> str:
        Probe.events.put_nowait(("start", label))
        return label

    def boom(self) -> None:
        raise RuntimeError("secret detail")

    def whoami(self) -> dict[str, Any]:
        return {
            "user": self.context.user,
            "agent": self.context.headers.get("user-agent"),
            "ip": self.context.remote_ip,
            "items": self.context.items,
            "transport": self.context.transport,
            "protocol": self.context.protocol,
        }

    async def forever(self) -> AsyncIterator[int]:
        i = 0
        try:
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.01)
        finally:
            Probe.events.put_nowait(("stream-ended", i))

    async def broken_stream(self) -> AsyncIterator[int]:
        yield 1
        raise ValueError("no")

    async def pair(self, a: AsyncIterator[int], b: AsyncIterator[int]) -> list[list[int]]:
        return [[x async for x in a], [x async for x in b]]

    def unserializable(self) -> object:
        return object()

    def nothing(self) -> None:
        return None


@pytest.fixture
def probe() -> type[Probe]:
    Probe.events = asyncio.Queue()
    Probe.gate = asyncio.Event()
    return Probe


async def test_results_and_the_exact_error_strings(
    probe: type[Probe], caplog: pytest.LogCaptureFixture
) -> None:
    async with running(probe) as h:
        c = await JsonWs.connect(h)
        assert await c.invoke("Add", 2, 3) == {"type": 3, "invocationId": "1", "result": 5}
        assert await c.invoke("Nothing") == {"type": 3, "invocationId": "1", "result": None}
        assert (await c.invoke("Missing"))["error"] == (
            "Failed to invoke 'Missing' due to an error on the server. HubException: Method does not exist."
        )
        assert (await c.invoke("Add", 1))["error"] == "Failed to invoke 'Add' due to an error on the server."
        assert (await c.invoke("Add", "1", 2))["error"] == "Failed to invoke 'Add' due to an error on the server."
        assert (await c.invoke("Boom"))["error"] == "An unexpected error occurred invoking 'Boom' on the server."
        assert "secret detail" in caplog.text  # logged, not sent
        assert (await c.invoke("Fail"))["error"] == (
            "An unexpected error occurred invoking 'Fail' on the server. HubException: Fail was called"
        )
        assert (await c.invoke("Unserializable"))["error"].startswith("An unexpected error occurred invoking")
        # Method names fall back to a case-insensitive match; Python names work too.
        assert (await c.invoke("echo", 1))["result"] == 1
        assert (await c.invoke("get_connection_id"))["result"]
        c.close()


async def test_detailed_errors(probe: type[Probe]) -> None:
    async with running(probe, enable_detailed_errors=True) as h:
        c = await JsonWs.connect(h)
        assert (await c.invoke("Boom"))["error"] == (
            "An unexpected error occurred invoking 'Boom' on the server. RuntimeError: secret detail"
        )
        assert (await c.invoke("Add", 1))["error"] == (
            "Failed to invoke 'Add' due to an error on the server. "
            "InvalidDataException: Invocation provides 1 argument(s) but target expects 2."
        )
        c.close()


async def test_a_non_blocking_invocation_sends_nothing(probe: type[Probe]) -> None:
    async with running(probe) as h:
        c = await JsonWs.connect(h)
        await c.send({"type": 1, "target": "Boom", "arguments": []}, {"type": 1, "target": "Missing", "arguments": []})
        assert (await c.invoke("Echo", "after"))["result"] == "after"
        assert c.skipped == []
        c.close()


async def test_invocations_run_one_at_a_time_in_order(probe: type[Probe]) -> None:
    async with running(probe) as h:
        c = await JsonWs.connect(h)
        assert (await probe.events.get())[0] == "connected"
        await c.send(
            {"type": 1, "invocationId": "a", "target": "Slow", "arguments": ["a"]},
            {"type": 1, "invocationId": "b", "target": "Quick", "arguments": ["b"]},
        )
        assert await asyncio.wait_for(probe.events.get(), 5) == ("start", "a")
        assert probe.events.empty()  # "b" waits for "a"
        probe.gate.set()
        assert await asyncio.wait_for(probe.events.get(), 5) == ("start", "b")
        assert [(await c.next_non_ping())["invocationId"] for _ in range(2)] == ["a", "b"]  # type: ignore[index]
        c.close()


async def test_server_streams_and_their_cancellation(probe: type[Probe]) -> None:
    async with running(probe) as h:
        c = await JsonWs.connect(h)
        await c.send({"type": 4, "invocationId": "s", "target": "Count", "arguments": [3]})
        got = [await c.next_non_ping() for _ in range(4)]
        assert got == [
            {"type": 2, "invocationId": "s", "item": 0},
            {"type": 2, "invocationId": "s", "item": 1},
            {"type": 2, "invocationId": "s", "item": 2},
            {"type": 3, "invocationId": "s"},
        ]
        await c.send({"type": 4, "invocationId": "f", "target": "Forever", "arguments": []})
        assert (await c.next_non_ping())["type"] == 2  # type: ignore[index]
        await c.send({"type": 5, "invocationId": "f"})
        while (message := await c.next_non_ping())["type"] == 2:  # type: ignore[index]
            pass
        assert message == {"type": 3, "invocationId": "f"}
        assert (await asyncio.wait_for(_next_event(probe, "stream-ended"), 5))[0] == "stream-ended"
        await c.send({"type": 5, "invocationId": "unknown"})  # ignored
        assert (await c.invoke("Echo", 1))["result"] == 1
        c.close()


async def _next_event(probe: type[Probe], kind: str) -> tuple[str, Any]:
    while True:
        event = await probe.events.get()
        if event[0] == kind:
            return event


async def test_stream_errors(probe: type[Probe]) -> None:
    async with running(probe) as h:
        c = await JsonWs.connect(h)
        await c.send({"type": 4, "invocationId": "e", "target": "BrokenStream", "arguments": []})
        assert await c.next_non_ping() == {"type": 2, "invocationId": "e", "item": 1}
        assert await c.next_non_ping() == {
            "type": 3,
            "invocationId": "e",
            "error": "An error occurred on the server while streaming results.",
        }
        assert (await c.invoke("Count", 1))["error"] == (
            "The client attempted to invoke the streaming 'Count' method with a non-streaming invocation."
        )
        await c.send({"type": 4, "invocationId": "n", "target": "Echo", "arguments": [1]})
        assert (await c.next_non_ping())["error"] == (  # type: ignore[index]
            "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation."
        )
        c.close()


async def test_upload_streams(probe: type[Probe]) -> None:
    async with running(probe) as h:
        c = await JsonWs.connect(h)
        await c.send({"type": 1, "invocationId": "u", "target": "Sum", "arguments": [], "streamIds": ["1"]})
        await c.send(*({"type": 2, "invocationId": "1", "item": i} for i in range(1, 5)))
        await c.send({"type": 3, "invocationId": "1"})
        await c.send({"type": 2, "invocationId": "1", "item": 100})  # after its completion: ignored
        assert await c.next_non_ping() == {"type": 3, "invocationId": "u", "result": 10}
        await c.send({"type": 1, "invocationId": "p", "target": "Pair", "arguments": [], "streamIds": ["x", "y"]})
        await c.send({"type": 2, "invocationId": "y", "item": 2}, {"type": 2, "invocationId": "x", "item": 1})
        await c.send({"type": 3, "invocationId": "x"}, {"type": 3, "invocationId": "y"})
        assert (await c.next_non_ping())["result"] == [[1], [2]]  # type: ignore[index]
        # A non-blocking upload sends nothing back.
        await c.send({"type": 1, "target": "Sum", "arguments": [], "streamIds": ["z"]})
        await c.send({"type": 2, "invocationId": "z", "item": 1}, {"type": 3, "invocationId": "z"})
        assert (await c.invoke("Sum", invocation_id="w"))["error"] == (
            "An unexpected error occurred invoking 'Sum' on the server. "
            "HubException: Client sent 0 stream(s), Hub method expects 1."
        )
        assert c.skipped == []
        c.close()


async def test_groups_and_broadcast_targets(probe: type[Probe]) -> None:
    async with running(probe) as h:
        a, b, c = [await JsonWs.connect(h) for _ in range(3)]
        await a.invoke("JoinGroup", "room")
        await a.invoke("JoinGroup", "room")  # idempotent
        await b.invoke("JoinGroup", "Room")  # group names are case-sensitive: another group
        await c.invoke("SendToGroup", "room", "hi")
        assert await a.next_non_ping() == {"type": 1, "target": "GroupMessage", "arguments": ["room", "hi"]}
        await a.invoke("LeaveGroup", "room")
        await c.invoke("SendToGroup", "room", "gone")
        await c.invoke("SendToGroup", "Room", "other")
        assert await b.next_non_ping() == {"type": 1, "target": "GroupMessage", "arguments": ["Room", "other"]}
        assert (await a.invoke("Echo", "sync"))["result"] == "sync" and a.skipped == []
        # From outside a hub, through a HubContext.
        await h.server.context.clients.group("Room").send("GroupMessage", "Room", "ctx")
        assert (await b.next_non_ping())["arguments"] == ["Room", "ctx"]  # type: ignore[index]
        a_id = (await a.invoke("GetConnectionId"))["result"]
        await h.server.context.clients.client(a_id).send("Direct", 1)
        assert await a.next_non_ping() == {"type": 1, "target": "Direct", "arguments": [1]}
        # A disconnected member leaves its groups.
        b_id = (await b.invoke("GetConnectionId"))["result"]
        b.close()
        assert await asyncio.wait_for(_next_event(probe, "disconnected"), 5) == ("disconnected", b_id)
        assert not h.server.lifetime.local_connection(b_id)  # type: ignore[attr-defined]
        a.close()
        c.close()


async def test_context_user_headers_items_and_on_connected(probe: type[Probe]) -> None:
    def user_provider(request: Any) -> str:
        if request.access_token == "bad":
            raise PermissionError
        return f"user:{request.access_token}"

    async with running(probe, user_provider=user_provider) as h:
        token = (await h.negotiate())["connectionToken"]
        c = JsonWs(await h.websocket(f"?id={token}&access_token=abc", headers={"User-Agent": "probe/1"}))
        await c.send_raw('{"protocol":"json","version":1}\x1e')
        assert await c.next() == {}
        who = (await c.invoke("Whoami"))["result"]
        assert who == {"user": "user:abc", "agent": "probe/1", "ip": "127.0.0.1", "items": {"joined": True},
                       "transport": "WebSockets", "protocol": "json"}
        c.close()
        assert (await asyncio.wait_for(_next_event(probe, "disconnected"), 5))[0] == "disconnected"
        refused = await h.fetch("/negotiate", method="POST", headers={"Authorization": "Bearer bad"})
        assert refused.code == 401


async def test_hub_context_standalone_with_lifetime_manager() -> None:
    lifetime = InMemoryHubLifetimeManager()
    async with running(ChatHub, lifetime_manager=lifetime) as h:
        c = await JsonWs.connect(h)
        await HubContext(lifetime).clients.all.send("Message", "from outside")
        assert await c.next_non_ping() == {"type": 1, "target": "Message", "arguments": ["from outside"]}
        c.close()


async def test_one_failing_connection_does_not_disturb_others(probe: type[Probe]) -> None:
    async with running(probe) as h:
        good = await JsonWs.connect(h)
        bad = await JsonWs.connect(h)
        await bad.send_raw("garbage\x1e")
        assert (await bad.next_non_ping())["type"] == 7  # type: ignore[index]
        await bad.closed()
        await good.invoke("Broadcast", "still here")
        assert good.skipped[0] == {"type": 1, "target": "Message", "arguments": ["still here"]}
        good.close()


def test_hub_error_is_signalr_error() -> None:
    from signalr.errors import SignalRError

    assert issubclass(HubError, SignalRError)


async def test_on_connected_failure_closes_without_reconnect() -> None:
    class Refuse(ChatHub):
        async def on_connected(self) -> None:
            raise RuntimeError("not today")

    async with running(Refuse) as h:
        c = await JsonWs.connect(h)
        assert await c.next_non_ping() == {"type": 7, "error": "Connection closed with an error."}
        assert await c.closed() == []


@pytest.mark.redis
async def test_the_example_hub_across_two_servers_on_redis(redis_url: str) -> None:
    from examples.chat import make_lifetime

    async with (
        running(lifetime_manager=make_lifetime(redis_url)) as s1,
        running(lifetime_manager=make_lifetime(redis_url)) as s2,
    ):
        a = await JsonWs.connect(s1)
        b = await JsonWs.connect(s2)
        await a.invoke("JoinGroup", "room")  # completes once the backplane has the membership
        await b.invoke("SendToGroup", "room", "across")
        assert await a.next_non_ping() == {"type": 1, "target": "GroupMessage", "arguments": ["room", "across"]}
        await b.invoke("Broadcast", "everyone")
        assert await a.next_non_ping() == {"type": 1, "target": "Message", "arguments": ["everyone"]}
        assert b.skipped == [{"type": 1, "target": "Message", "arguments": ["everyone"]}]
        a_id = (await a.invoke("GetConnectionId"))["result"]
        await s2.server.context.clients.client(a_id).send("Direct", "hi")
        assert await a.next_non_ping() == {"type": 1, "target": "Direct", "arguments": ["hi"]}
