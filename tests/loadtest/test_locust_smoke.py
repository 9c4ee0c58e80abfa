"""The load-test kit (loadtest/locustfile.py) run the way its README section says, against the demo.

``iqra-gateway demo`` (embedded store, simulated platform, cap 2) and a headless Locust run of 20 seconds,
both as real processes. Six visitors for two slots: the first are served at once, the rest queue and are
served through ``/sessionHub``, so every step of the visitor and every custom row is exercised.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import sys
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.harness.paths import ROOT
from tests.harness.processes import ChildProcess
from tests.harness.redis_process import free_port

pytestmark = pytest.mark.slow

LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


async def start_demo() -> tuple[ChildProcess, str, str]:
    """The demo on a free port, ready; its base URL and its simulator's."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--log-level", "warning", "demo", "--port", str(port),
        "--call-seconds", "30", cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    demo = ChildProcess("demo", proc)
    await asyncio.wait_for(demo.line_containing("Press Ctrl+C"), 30)
    # The simulator takes the next port, or any free one when that is taken: the demo says which.
    sim = next(m.group(1) for line in demo.lines if (m := re.search(r"simulated platform: (http://\S+?)/api/v1/", line)))
    return demo, f"http://127.0.0.1:{port}", sim


async def run_locust(host: str, csv_prefix: Path, *options: str, seconds: int = 20) -> tuple[int, str]:
    """A headless run with six visitors; its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "6", "-r", "6",
        "-t", f"{seconds}s", "--host", host, "--csv", str(csv_prefix), "--only-summary",
        # Short calls, so the two slots turn over often and the queue moves (and estimates are told).
        "--audio-frames", "10", "--hold-seconds", "1", "--think-seconds", "0.5", *options,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode, output.decode("utf-8", "replace")


def stats_rows(csv_prefix: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(f"{csv_prefix}_stats.csv", newline="") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


async def test_a_headless_locust_run_against_the_demo_queues_serves_and_talks_without_failures(tmp_path):
    demo, base, sim_url = await start_demo()
    try:
        code, output = await run_locust(base, tmp_path / "run")
        http = AsyncHTTPClient(force_instance=True)
        calls = json.loads((await http.fetch(sim_url + "/_sim/calls?all=1")).body)["calls"]
        http.close()
    finally:
        await demo.stop()
    assert code == 0, output  # Locust exits 1 when any request failed
    rows = stats_rows(tmp_path / "run")
    with open(tmp_path / "run_failures.csv", newline="") as f:
        assert list(csv.DictReader(f)) == []
    assert rows[("", "Aggregated")]["Failure Count"] == "0", output

    def count(kind: str, name: str) -> int:
        assert (kind, name) in rows, f"no {kind} {name!r} row:\n{output}"
        return int(rows[kind, name]["Request Count"])

    # Both paths: served at once (200), and queued (202) then served through the hub.
    assert count("POST", "/api/session/request (200 served)") > 0
    queued = count("POST", "/api/session/request (202 queued)")
    assert queued > 0
    assert count("POST", "/sessionHub/negotiate") > 0
    assert count("hub", "connect") > 0
    assert count("hub", "Register") > 0
    # The custom metrics: waits ended by SessionReady, and estimates compared with the waits they predicted.
    assert 0 < count("queue", "wait") <= queued
    assert float(rows["queue", "wait"]["Average Response Time"]) > 0
    assert count("queue", "estimate error") > 0
    # Audio both ways: the visitors received the agent's frames, and the platform received theirs.
    assert count("audio", "connect") > 0
    assert count("audio", "first frame") > 0
    assert count("audio", "call") > 0
    assert float(rows["audio", "call"]["Average Content Size"]) > 0
    talked = [call for call in calls
              if call["endReason"] == "client hung up" and call["framesReceived"] > 0 and call["framesSent"] > 0]
    assert len(talked) >= count("audio", "call")


async def test_refused_session_requests_are_failures_and_fail_the_run(tmp_path):
    # The other side of "zero failures": a region the campaign does not allow is refused (400), and the
    # run says so in its exit code and its failures file.
    demo, base, _ = await start_demo()
    try:
        code, output = await run_locust(base, tmp_path / "run", "--region", "nowhere", seconds=3)
    finally:
        await demo.stop()
    assert code == 1, output
    with open(tmp_path / "run_failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert [(row["Method"], row["Name"]) for row in failures] == [("POST", "/api/session/request")]
    assert "400" in failures[0]["Error"] and "RegionId" in failures[0]["Error"]
    assert int(failures[0]["Occurrences"]) > 0
    rows = stats_rows(tmp_path / "run")
    assert not any(kind in ("hub", "queue", "audio") for kind, _ in rows)


async def test_a_visitor_that_waits_too_long_is_a_queue_failure_and_gives_its_place_back(tmp_path):
    # Calls of 20 s hold both slots, so the queued visitors reach --queue-timeout: each is a failed
    # "queue wait", and each leaves the queue over HTTP as the widget's beacon does.
    demo, base, _ = await start_demo()
    try:
        code, output = await run_locust(base, tmp_path / "run", "--hold-seconds", "20", "--queue-timeout", "2",
                                        seconds=6)
    finally:
        await demo.stop()
    assert code == 1, output
    rows = stats_rows(tmp_path / "run")
    with open(tmp_path / "run_failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert [(row["Method"], row["Name"]) for row in failures] == [("queue", "wait")], output
    assert "no SessionReady in 2 s" in failures[0]["Error"]
    waits = rows["queue", "wait"]
    assert int(waits["Failure Count"]) == int(waits["Request Count"]) > 0
    assert int(rows["hub", "Register"]["Request Count"]) > 0 and rows["hub", "Register"]["Failure Count"] == "0"
    left = rows["POST", "/api/session/leave/[id]"]
    assert int(left["Request Count"]) >= int(waits["Request Count"]) and left["Failure Count"] == "0"
