"""``@microsoft/signalr`` (the official JS client, under Node) against ``python -m examples.chat``.

Each Node script runs many scenarios in one process and reports what it observed; the assertions live
here. Scripts and servers are shared per module so the whole file stays at a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.interop import ExampleServer, NodeScript, run_node
from tests.harness.redis_process import RedisProcess

pytestmark = pytest.mark.interop

# Every transport with JSON, MessagePack where the transport carries binary (SSE is text-only).
COMBOS = ["ws:json", "sse:json", "lp:json", "ws:msgpack", "lp:msgpack"]
NAMES = [combo.replace(":", "-") for combo in COMBOS]
ECHO_VALUE = {"text": "h\u00e9llo \u2713", "list": [1, 2.5, None, True], "nested": {"k": "v"}}
FAIL_TEXT = "An unexpected error occurred invoking 'Fail' on the server. HubException: Fail was called"
TRANSPORT_CLASSES = {"ws": "WebSocketTransport", "sse": "ServerSentEventsTransport", "lp": "LongPollingTransport"}


@pytest.fixture(scope="module")
def scenarios(example: ExampleServer) -> dict[str, Any]:
    return run_node("scenarios.mjs", "--url", example.url, "--combos", ",".join(COMBOS))


def _combo(scenarios: dict[str, Any], name: str) -> dict[str, Any]:
    result = scenarios[name]
    assert "error" not in result, result
    return result


@pytest.mark.parametrize("name", NAMES)
def test_connects_with_the_requested_transport(scenarios: dict[str, Any], name: str) -> None:
    result = _combo(scenarios, name)
    assert result["transport"] == TRANSPORT_CLASSES[name.split("-")[0]]
    assert result["connectionIdMatches"] is True


@pytest.mark.parametrize("name", NAMES)
def test_invoke_echo_and_add(scenarios: dict[str, Any], name: str) -> None:
    result = _combo(scenarios, name)
    assert result["echo"] == ECHO_VALUE
    assert result["add"] == 5.5


@pytest.mark.parametrize("name", NAMES)
def test_server_to_client_stream(scenarios: dict[str, Any], name: str) -> None:
    assert _combo(scenarios, name)["count"] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", NAMES)
def test_client_to_server_stream(scenarios: dict[str, Any], name: str) -> None:
    assert _combo(scenarios, name)["sum"] == 10.5


@pytest.mark.parametrize("name", NAMES)
def test_hub_error_text(scenarios: dict[str, Any], name: str) -> None:
    assert _combo(scenarios, name)["fail"] == {"error": FAIL_TEXT}


@pytest.mark.parametrize("name", NAMES)
def test_invocation_failure_texts(scenarios: dict[str, Any], name: str) -> None:
    result = _combo(scenarios, name)
    assert result["unknownMethod"] == {
        "error": "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist."
    }
    # Binding failures carry no detail unless detailed errors are on.
    assert result["badArgument"] == {"error": "Failed to invoke 'Add' due to an error on the server."}
    assert result["wrongArgCount"] == {"error": "Failed to invoke 'Echo' due to an error on the server."}


@pytest.mark.parametrize("name", NAMES)
def test_large_message_round_trip(scenarios: dict[str, Any], name: str) -> None:
    assert _combo(scenarios, name)["bigEchoLength"] == 20000


@pytest.mark.parametrize("name", NAMES)
def test_broadcast_reaches_both_clients_once(scenarios: dict[str, Any], name: str) -> None:
    assert _combo(scenarios, name)["broadcast"] == [[f"{name}:hello"], [f"{name}:hello"]]


@pytest.mark.parametrize("name", NAMES)
def test_groups_join_send_leave(scenarios: dict[str, Any], name: str) -> None:
    groups = _combo(scenarios, name)["groups"]
    # Only the message sent while a member arrives; the sender, never a member, gets nothing.
    assert groups == {"member": [[f"{name}:room", "while member"]], "nonMember": []}


@pytest.mark.parametrize("name", NAMES)
def test_stop_disconnects(scenarios: dict[str, Any], name: str) -> None:
    assert _combo(scenarios, name)["stateAfterStop"] == "Disconnected"


# -- withAutomaticReconnect across a restart on the same port -------------------------------------


@pytest.fixture(scope="module")
def reconnect() -> Iterator[dict[str, Any]]:
    with ExampleServer() as server:
        script = NodeScript("reconnect.mjs", "--url", server.url, "--combos", ",".join(COMBOS))
        try:
            script.expect_event("connected")
            exit_code = server.stop()
            server.start()
            script.tell("restarted")
            yield {"exit_code": exit_code, **script.result()}
        finally:
            script.close()


def test_sigterm_shuts_the_example_down_cleanly(reconnect: dict[str, Any]) -> None:
    assert reconnect["exit_code"] == 0


@pytest.mark.parametrize("name", NAMES)
def test_automatic_reconnect_after_server_restart(reconnect: dict[str, Any], name: str) -> None:
    result = reconnect[name]
    assert result["before"]["echo"] == "before"
    after = result["after"]
    assert "error" not in after, result
    assert after["state"] == "Connected"
    assert after["echo"] == "after"
    # A full reconnect is a new connection: new id, reported consistently by client and server.
    assert after["idFromCallback"] == after["connectionId"] == after["serverSideId"]
    assert after["connectionId"] != result["before"]["id"]
    assert len(result["seen"]["reconnecting"]) == 1
    assert len(result["seen"]["reconnected"]) == 1
    assert result["seen"]["closed"] == []
    if not name.startswith("lp"):
        # The shutdown Close (allowReconnect, no error) is what started the reconnect. Long polling
        # may instead see its next poll refused first, since the old process is already gone.
        assert result["seen"]["reconnecting"] == [None]


# -- withStatefulReconnect across a dropped WebSocket ---------------------------------------------


@pytest.fixture(scope="module")
def stateful(example: ExampleServer) -> dict[str, Any]:
    return run_node("stateful.mjs", "--url", example.url, "--protocols", "json,msgpack")


@pytest.mark.parametrize("protocol", ["json", "msgpack"])
def test_stateful_reconnect_replays_without_loss_or_duplicates(stateful: dict[str, Any], protocol: str) -> None:
    result = stateful[protocol]
    assert "error" not in result, result
    tag = f"stateful-{protocol}:"
    assert result["negotiatedStateful"] is True
    assert result["reattached"] is True
    assert result["stateAfterDrop"] == "Connected"
    assert result["echoDuringDrop"] == f"{tag}echo-during"
    during = [f"-during-{i}" for i in (1, 2, 3)]
    assert result["receivedByA"] == [f"{tag}b-before", *(f"{tag}b{d}" for d in during), f"{tag}b-final"]
    assert result["receivedByB"] == [f"{tag}a-before", *(f"{tag}a{d}" for d in during), f"{tag}a-final"]
    # A re-attach is invisible to the application: same connection, groups kept, no reconnect events.
    assert result["idAfter"] == result["idBefore"] == result["serverSideIdAfter"]
    assert result["groupAfter"] == [f"{tag}room", "after re-attach"]
    assert result["reconnectingEvents"] == 0
    assert result["closedBeforeStop"] == []


def test_dropped_socket_without_stateful_reconnect_loses_messages(example: ExampleServer) -> None:
    """Control for the test above: the same drop really loses in-flight traffic without the feature."""
    result = run_node("stateful.mjs", "--url", example.url, "--protocols", "json", "--stateful", "false")["json"]
    assert result["negotiatedStateful"] is False
    assert result["stateAfterDrop"] == "Disconnected"
    assert "error" in result["echoDuringDrop"]
    assert result["receivedByB"] == ["stateful-json:a-before"]


# -- two processes on one Redis -------------------------------------------------------------------


@pytest.fixture(scope="module")
def backplane(redis_server: RedisProcess) -> dict[str, Any]:
    with ExampleServer(redis_url=redis_server.url) as one, ExampleServer(redis_url=redis_server.url) as two:
        return run_node("backplane.mjs", "--url1", one.url, "--url2", two.url, "--combos", "ws:json,sse:json,lp:msgpack")


@pytest.mark.redis
@pytest.mark.parametrize("name", ["ws-json", "sse-json", "lp-msgpack"])
def test_backplane_broadcast_and_group_cross_processes(backplane: dict[str, Any], name: str) -> None:
    result = backplane[name]
    assert "error" not in result, result
    assert result["waits"] == "ok"
    tag = f"bp-{name}:"
    # Sender and m1 are on process 1, m2 and n on process 2; each gets each message exactly once.
    expected = [f"{tag}all", f"{tag}marker"]
    assert result["broadcast"] == {"sender": expected, "m1": expected, "m2": expected, "n": expected}
    members = [[f"{tag}room", "to the group"], [f"{tag}room", "group marker"]]
    assert result["group"] == {"sender": [], "m1": members, "m2": members, "n": []}
