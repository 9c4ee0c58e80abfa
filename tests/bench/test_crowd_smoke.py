"""Keeps ``bench/bench_crowd.py`` from rotting: the whole run at toy scale (a hundred waiting clients on
``serve --processes 2``), in its own process, with real redis-server, simulator and gateway. The figures are
not judged, except what is behaviour rather than speed: the drain serves in queue order, and no client is
ever told a position higher than one it was told before."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness.paths import ROOT

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_the_crowd_bench_runs_and_the_queue_drains_in_order() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_crowd.py"), "--waiting", "100", "--samples", "3",
         "--drain", "20", "--drain-rate", "50", "--idle-seconds", "0.5"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "   100 waiting:" in done.stdout, done.stdout
    assert "FIFO yes (" in done.stdout and "positions only fall yes" in done.stdout, done.stdout
    assert "lost" not in done.stdout, done.stdout
    assert "samples whose client process did not stall" in done.stdout, done.stdout


def test_the_set_up_comparison_runs_for_aiosignalr_and_the_gateway() -> None:
    """``--compare-setup``: both ends of the comparison at toy scale (aiosignalr's chat server, and the
    gateway on ``--processes 2`` with Register), each figure printed."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_crowd.py"), "--compare-setup", "30",
         "--targets", "aiosignalr", "gateway-2+register"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for target in ("aiosignalr", "gateway-2+register"):
        assert f"{target:20s} median " in done.stdout, done.stdout
