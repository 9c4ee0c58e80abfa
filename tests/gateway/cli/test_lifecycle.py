"""Process-level behaviour: graceful shutdown, the reclaim timer, the CLI, the demo, request ids in logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys

import pytest
from tornado.httpclient import AsyncHTTPClient

from gateway.logs.context import LOG_FORMAT, RequestIdFilter, current_request_id
from tests.harness.fake_clock import FakeClock
from tests.harness.paths import CONFIG_SAMPLES, ROOT
from tests.harness.redis_process import free_port
from tests.harness.stack import base_config, body_of, session_body, start_stack


async def test_shutdown_finishes_in_flight_requests_and_accepts_no_new_ones(store_client):
    stack = await start_stack(store_client)
    try:
        stack.sim.hang_seconds = 1.0  # the platform answers (with an error) after a second
        await stack.sim_call("POST", "/_sim/fail", {"count": 1, "mode": "timeout"})
        in_flight = asyncio.ensure_future(stack.request_session())
        # Wait (bounded) until the gateway is really inside that request: the simulator has received it.
        async def platform_has_the_request():
            while not any(r.path.endswith("/initiate") for r in stack.sim.requests):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(platform_has_the_request(), 10)
        stopping = asyncio.ensure_future(stack.gateway.stop(grace=5))
        await asyncio.sleep(0)  # let stop() close the listening socket
        late_client = AsyncHTTPClient(force_instance=True)
        with pytest.raises(ConnectionRefusedError):  # no new work once shutdown began
            await late_client.fetch(stack.base_url + "/healthz", request_timeout=5)
        late_client.close()
        response = await asyncio.wait_for(in_flight, 10)
        assert response.code == 502  # the in-flight request got its real answer
        await asyncio.wait_for(stopping, 10)
    finally:
        stack.http.close()
        stack.sim_server.stop()
        await stack.sim.aclose()


async def test_expired_leases_are_reclaimed_on_the_timer_without_any_traffic(store_client):
    clock = FakeClock()
    config = base_config(cap=1)
    config["Concurrency"]["SessionLeaseSeconds"] = 60
    stack = await start_stack(store_client, config=config, clock=clock, dispatch_interval=0.05)
    try:
        assert (await stack.request_session()).code == 200
        waiting = body_of(await stack.request_session())
        ready = stack.outcome(waiting["uniqueRequestId"])
        clock.advance(61)
        # No webhook, no request, no kick: only the dispatcher's own timer can serve the entry.
        event = await asyncio.wait_for(ready, 10)
        assert event.request_id == waiting["uniqueRequestId"]
    finally:
        await stack.close()


def _cli(*args: str, timeout: float = 30, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if "__" not in k}
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**clean, **(env or {})})


def test_check_config_accepts_the_originals_file_and_reports_every_problem_of_a_bad_one(tmp_path):
    original = str(CONFIG_SAMPLES / "appsettings.original.json")
    # Its BlockVpn/BlockProxy need a MaxMind database now (the paid lookup service is gone): said plainly.
    without_db = _cli("check-config", "--config", original)
    assert without_db.returncode == 1
    assert "Security.BlockVpn" in without_db.stdout and "GeoIp.AnonymousIpDatabase" in without_db.stdout
    database = tmp_path / "anonymous.mmdb"
    database.write_bytes(b"")
    good = _cli("check-config", "--config", original, env={"GeoIp__AnonymousIpDatabase": str(database)})
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.strip().splitlines()[-1] == "OK"
    assert "IpApi" in good.stdout  # the replaced lookup service is explained in a warning

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({
        "VoiceAiPlatform": {"ApiSecretToken": "t", "Campaigns": {"A": {"BusinessId": "1", "AllowedRegionIds": "eu"}}},
        "Concurrency": {"MaxConcurrentSessions": -1},
    }))
    result = _cli("check-config", "--config", str(bad))
    assert result.returncode == 1
    lines = result.stdout
    assert "VoiceAiPlatform.Campaigns.A.WebCampaignId" in lines
    assert "VoiceAiPlatform.Campaigns.A.AllowedRegionIds" in lines
    assert "Concurrency.MaxConcurrentSessions" in lines
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_refuses_to_start_on_a_broken_configuration(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ this is not json")
    result = _cli("serve", "--config", str(bad), "--port", str(free_port()))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def _two_free_ports() -> int:
    """A port P with P+1 also free: the demo puts its simulator on the next port."""
    import socket

    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no two adjacent free ports")


async def test_the_demo_command_serves_a_session_end_to_end():
    port = _two_free_ports()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", str(port), "--call-seconds", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        loop = asyncio.get_running_loop()
        seen = []
        while True:
            line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 30)
            seen.append(line)
            assert line, "the demo exited before it was ready:\n" + "".join(seen)
            if "Press Ctrl+C" in line:
                break
        http = AsyncHTTPClient(force_instance=True)
        body = session_body("DemoCampaign", "local")
        answers = []
        for _ in range(3):
            response = await http.fetch(f"http://127.0.0.1:{port}/api/session/request", method="POST",
                                        body=json.dumps(body), raise_error=False,
                                        headers={"Content-Type": "application/json"})
            answers.append((response.code, body_of(response)))
        http.close()
        assert [code for code, _ in answers] == [200, 200, 202]  # the demo's cap is 2
        assert answers[0][1]["webSocketUrl"].startswith(f"ws://127.0.0.1:{port + 1}/ws/session/")
        assert answers[2][1]["queuePosition"] == 1
        [admin_line] = [line for line in seen if "admin dashboard:" in line]
        token = admin_line.rsplit("token: ", 1)[1].rstrip(")\n")
        http = AsyncHTTPClient(force_instance=True)
        snapshot = await http.fetch(f"http://127.0.0.1:{port}/api/admin/queue",
                                    headers={"Authorization": f"Bearer {token}"}, raise_error=False)
        http.close()
        assert snapshot.code == 200 and body_of(snapshot)["queueLength"] == 1  # the printed token opens it
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        proc.stdout.close()
    assert code == 0


def test_the_demo_stopped_as_soon_as_it_says_anything_stops_cleanly():
    # Its signal handlers are in place before its first line: a supervisor may stop it the moment it speaks.
    port = _two_free_ports()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        seen = []
        while not seen or not seen[-1].startswith("iqra-gateway demo"):  # its log lines may come first
            seen.append(proc.stdout.readline())
            assert seen[-1], "the demo exited before it spoke:\n" + "".join(seen)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert code == 0


async def test_log_lines_carry_the_request_id_of_the_request_that_wrote_them():
    record_holder = []

    class Capture(logging.Handler):
        def emit(self, record):
            record_holder.append(self.format(record))

    handler = Capture()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("gateway.test-logcontext")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async def request(rid):
            current_request_id.set(rid)
            await asyncio.sleep(0)
            logger.info("working")

        await asyncio.gather(asyncio.create_task(request("req-a")), asyncio.create_task(request("req-b")))
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    assert any("[req-a] working" in line for line in record_holder)
    assert any("[req-b] working" in line for line in record_holder)
    assert any("[-] outside" in line for line in record_holder)
