"""Two real gateway processes on one Redis serve one queue: every queued request exactly once, none lost.

Everything is a separate OS process started the way an operator would: ``python -m gateway serve`` twice
(A and B) and ``python -m gateway simulate-platform`` once, its session-ended webhook pointed at A. The
test fills the queue through both gateways, ends calls through the simulator's control API (so the
webhook frees slots at A, whose dispatcher claims) while new requests reach B (whose admissions claim
older eligible entries first). In every other round the same end is also posted straight to B, as a
load balancer in front of both would do, so that the two dispatchers race for the freed slots (the
webhook is idempotent: whichever copy comes first frees the slot). The result is checked from the
platform's side and from both gateways.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter

import pytest
import redis.asyncio as aioredis
import ujson
from tornado.httpclient import AsyncHTTPClient

from tests.harness.processes import ChildProcess
from tests.harness.redis_process import free_port
from tests.harness.stack import API_TOKEN, WEBHOOK_TOKEN, base_config, conversation_id_of, session_body

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TIMEOUT = 20
CAP = 2
READY_LINE = re.compile(r"queued request (\S+) is ready \(conversation (\S+)\)")




@pytest.fixture
async def processes(redis_proc, tmp_path):
    port_a, port_b, sim_port = free_port(), free_port(), free_port()
    config = base_config(cap=CAP)
    config["RedisConnectionString"] = redis_proc.url
    config["VoiceAiPlatform"]["BaseUrl"] = f"http://127.0.0.1:{sim_port}/api/v1/"
    config_file = tmp_path / "appsettings.json"
    config_file.write_text(json.dumps(config))
    children: list[ChildProcess] = []
    try:
        children.append(await ChildProcess.gateway(
            "simulator", "simulate-platform", "--port", str(sim_port), "--api-token", API_TOKEN,
            "--webhook-url", f"http://127.0.0.1:{port_a}/api/webhook/session-ended",
            "--webhook-token", WEBHOOK_TOKEN, "--call-seconds", "0", ready="listening on"))
        for name, port in (("gateway A", port_a), ("gateway B", port_b)):
            children.append(await ChildProcess.gateway(name, "serve", "--config", str(config_file), "--host", "127.0.0.1",
                                              "--port", str(port), ready="listening on"))
        yield {"a": f"http://127.0.0.1:{port_a}", "b": f"http://127.0.0.1:{port_b}",
               "sim": f"http://127.0.0.1:{sim_port}", "children": dict(zip(("sim", "a", "b"), children))}
    finally:
        for child in reversed(children):
            await child.stop()


async def test_two_gateway_processes_dispatch_every_queued_request_exactly_once(processes, redis_proc):
    http = AsyncHTTPClient(force_instance=True, max_clients=64)

    async def call(base: str, method: str, path: str, body=None) -> tuple[int, object]:
        payload = ujson.dumps(body) if body is not None else (b"" if method == "POST" else None)
        response = await http.fetch(base + path, method=method, body=payload, raise_error=False,
                                    request_timeout=TIMEOUT, headers={"Content-Type": "application/json"})
        return response.code, (ujson.loads(response.body) if response.body else None)

    sent = 0
    admitted: dict[str, str] = {}  # client tag -> conversation id
    queued: dict[str, str] = {}  # request id -> client tag

    async def request(base: str) -> None:
        nonlocal sent
        sent += 1
        tag = f"client-{sent}"  # travels to the platform in the initiate body's Metadata
        code, body = await call(base, "POST", "/api/session/request", session_body(metadata={"tag": tag}))
        if code == 200:
            admitted[tag] = conversation_id_of(body["webSocketUrl"])
        else:
            assert code == 202, (code, body)
            queued[body["uniqueRequestId"]] = tag

    async def webhook(base: str, conversation: str) -> None:
        response = await http.fetch(base + "/api/webhook/session-ended", method="POST",
                                    body=ujson.dumps({"ConversationSessionId": conversation}),
                                    headers={"X-Api-Token": WEBHOOK_TOKEN}, raise_error=False,
                                    request_timeout=TIMEOUT)
        assert response.code == 200, (response.code, response.body)

    store = aioredis.Redis.from_url(redis_proc.url)

    async def live_calls() -> list[str]:
        """Calls live at the platform whose sessions the gateways have recorded (so their end is known)."""
        code, body = await call(processes["sim"], "GET", "/_sim/calls")
        assert code == 200
        live = [c["conversationSessionId"] for c in body["calls"]]
        recorded = [await store.zscore("iqra:admission:leases:active", cid.lower()) for cid in live]
        return [cid for cid, score in zip(live, recorded, strict=True) if score is not None]

    async def ready_ids() -> set[str]:
        done = set()
        for request_id in queued:
            code, body = await call(processes["a"], "GET", f"/api/session/status/{request_id}")
            assert code == 200, (code, body)
            if body["status"] == "ready":
                done.add(request_id)
            else:
                assert body["status"] == "queued", body
        return done

    try:
        # Fill from both processes at once: the cap admits CAP, every other request is queued once.
        await asyncio.gather(*(request(processes["a" if i % 2 else "b"]) for i in range(12)))
        assert len(admitted) == CAP and len(queued) == 12 - CAP
        # Rounds: end every live call (the webhook reaches A) while new clients arrive at B.
        deadline = time.monotonic() + 60
        arrivals = 6
        rounds = 0
        while True:
            served = await ready_ids()
            if len(served) == len(queued) and arrivals == 0:
                break
            assert time.monotonic() < deadline, f"only {len(served)} of {len(queued)} queued requests served"
            live = await live_calls()
            if len(live) < CAP:
                await asyncio.sleep(0.05)  # a dispatch (maybe the other process's) is under way
                continue
            rounds += 1
            ends = [call(processes["sim"], "POST", f"/_sim/calls/{cid}/end") for cid in live]
            if rounds % 2 == 0:
                ends += [webhook(processes["b"], cid) for cid in live]
            news = [request(processes["b"])] if arrivals else []
            arrivals -= len(news)
            await asyncio.gather(*ends, *news)
            # Wait until both freed slots are taken again (or nothing is left to take them).
            while len(await live_calls()) < CAP and len(await ready_ids()) < len(queued):
                assert time.monotonic() < deadline, "freed slots were not filled again"
                await asyncio.sleep(0.05)

        # The platform's side: one initiate per client, every client's exactly once.
        code, body = await call(processes["sim"], "GET", "/_sim/calls?all=1")
        calls = body["calls"]
        assert len(calls) == sent == len(admitted) + len(queued)
        code, body = await call(processes["sim"], "GET", "/_sim/requests")
        initiates = [r for r in body["requests"] if r["path"].endswith("/websession/initiate")]
        tags = Counter(json.loads(r["body"])["Metadata"]["tag"] for r in initiates)
        assert tags == Counter({f"client-{i}": 1 for i in range(1, sent + 1)})

        # The gateways' side: both show every queued request ready, with one and the same URL.
        urls = {}
        for request_id in queued:
            seen = set()
            for base in (processes["a"], processes["b"]):
                code, body = await call(base, "GET", f"/api/session/status/{request_id}")
                assert (code, body["status"]) == (200, "ready")
                seen.add(body["webSocketUrl"])
            assert len(seen) == 1
            urls[request_id] = seen.pop()
        conversations = {conversation_id_of(u) for u in urls.values()} | set(admitted.values())
        assert conversations == {c["conversationSessionId"] for c in calls}

        # Each queued request was dispatched by exactly one process, once; both processes took part.
        dispatched: Counter[str] = Counter()
        per_process = Counter()
        for name in ("a", "b"):
            for line in processes["children"][name].lines:
                match = READY_LINE.search(line)
                if match:
                    dispatched[match.group(1)] += 1
                    per_process[name] += 1
        never_served = set(queued) - set(dispatched)
        assert all(n == 1 for n in dispatched.values()), dispatched
        assert not never_served, never_served
        assert per_process["a"] > 0 and per_process["b"] > 0, per_process

        # Nothing lost, nothing leaked: the CAP sessions still live hold the slots, the queue is empty.
        assert await store.zcard("iqra:admission:queue") == 0
        assert await store.zcard("iqra:admission:leases:pending") == 0
        assert await store.zcard("iqra:admission:leases:active") == len(await live_calls()) == CAP
    finally:
        http.close()
        await store.aclose()
