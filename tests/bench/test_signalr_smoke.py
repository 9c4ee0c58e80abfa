"""Keeps ``bench/bench_signalr.py`` from rotting: the whole driver, at toy scale, against both servers.

Real server processes (``python -m examples.chat`` and ``bench/aiosignalr_server.py``) on free
ports, driven by the benchmark's own client; the figures are not judged, only that every phase ran
and produced sane numbers.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from tests.harness.paths import ROOT

# The bench folder is scripts, not a package: its modules import each other by their file names.
sys.path.insert(0, str(ROOT / "bench"))

from bench_signalr import BenchConfig, ServerProcess, parse_args, report, run_bench  # noqa: E402
from signalr_client import HubError, Negotiator, connect  # noqa: E402


async def test_bench_driver_runs_against_both_servers() -> None:
    config = BenchConfig(connections=20, invoke_connections=4, duration=0.3, warmup=0.1, broadcasts=2,
                         repeat=1, timeout=30)

    results = await run_bench(config)

    assert set(results) == {"ours", "aiosignalr"}
    for figures in results.values():
        assert len(figures.bytes_per_connection) == 1 and math.isfinite(figures.bytes_per_connection[0])
        assert len(figures.broadcast_last_ms) == 2
        assert all(0 < median <= last < 30_000 for median, last
                   in zip(figures.broadcast_median_ms, figures.broadcast_last_ms, strict=True))
        assert figures.invocations_per_s[0] > 0
        assert 0 < figures.invoke_p50_ms[0] <= figures.invoke_p99_ms[0]
    table = report(config, results)
    assert "ours/aiosignalr" in table and "target: broadcast to all delivered in under 1 s" in table


async def test_client_reports_hub_errors_and_both_servers_echo_alike(tmp_path: Path) -> None:
    answers = {}
    for name in ("ours", "aiosignalr"):
        async with ServerProcess(name, timeout=30, log_dir=tmp_path) as server, \
                Negotiator("127.0.0.1", server.port, "/chat") as negotiator:
            client = await connect(negotiator)
            try:
                answers[name] = await client.invoke("Echo", {"nested": [1, "two", None]})
                with pytest.raises(HubError):
                    await client.invoke("NoSuchMethod")
            finally:
                await client.close()
    assert answers == {"ours": {"nested": [1, "two", None]}, "aiosignalr": {"nested": [1, "two", None]}}


def test_bench_rejects_a_nonsense_scale() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--connections", "0"])
    config, _ = parse_args(["--connections", "7", "--servers", "ours"])
    assert config.connections == 7 and config.servers == ("ours",)
