"""Keeps ``bench/bench_hub_flood.py`` from rotting: the whole run at toy scale, in its own process, against
each target (the real gateway, its default, and the bench's bare hub server).

Real processes (redis-server, the gateway and the platform simulator or the bench's hub server, the
/healthz prober); the figures are not judged, only that every phase ran, except what is behaviour rather
than speed: the 10 MB frame is refused with 1009.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.paths import ROOT


@pytest.mark.parametrize("target", [None, "hub"])
def test_the_flood_bench_runs_and_reports_every_figure(tmp_path: Path, target: str | None) -> None:
    figures_path = tmp_path / "figures.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    chosen = ["--target", target] if target else []
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_hub_flood.py"), *chosen, "--connections", "2",
         "--megabytes", "0.5", "--flood-seconds", "1", "--idle-seconds", "0.3", "--json", str(figures_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    expected = target or "gateway"
    for line in (f"Hub flood of the {expected}", "server RSS: idle", "/healthz: idle",
                 "Redis busy after the sockets were dropped", "written per connection",
                 "a 10 MB frame: closed with code 1009"):
        assert line in done.stdout, done.stdout
    figures = json.loads(figures_path.read_text())
    assert figures["target"] == expected
    # The gateway's flood owes answers (hub errors: unknown ids); the bare hub's does not.
    assert figures["answers"] is (expected == "gateway")
    assert figures["rss_peak_kib"] > 0 and figures["rss_idle_kib"] > 0
    assert figures["health_idle"] and figures["health_flood"]
    assert all(math.isfinite(x) and x > 0 for x in figures["health_flood"])
    assert figures["invocations"] > 0 and len(figures["written"]) == 2
    assert figures["oversized_code"] == 1009
