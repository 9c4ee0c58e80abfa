"""The command line as an operator uses it, in real processes: ``--version``, ``--log-level`` and
``--log-format`` before or after the command, JSON logs with the request id, and configuration problems
listed with their warnings and the key a misspelt one probably meant."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient

from gateway.cli.commands import package_version
from tests.harness.paths import ROOT
from tests.harness.redis_process import free_port
from tests.harness.settings import minimal

#: Three misspelt keys (with Concurrency's, below): three warnings in binding order, each with its hint.
MISSPELT = {"Queue": {"MaxLenght": 5}, "Limits": {"MaxConnectionPerIp": 9}}
WARNINGS = (
    "Queue.MaxLenght: unknown key, ignored; did you mean MaxLength?",
    "Concurrency.MaxConcurentSessions: unknown key, ignored; did you mean MaxConcurrentSessions?",
    "Limits.MaxConnectionPerIp: unknown key, ignored; did you mean MaxConnectionsPerIp?",
)


def _env() -> dict[str, str]:
    # No configuration from the test runner's environment (Section__Key variables).
    return {**{k: v for k, v in os.environ.items() if "__" not in k}, "PYTHONPATH": str(ROOT)}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=_env())


def _config(tmp_path: Path, *, cap_spelt_right: bool = True, **sections: Any) -> str:
    data = {**minimal(), **MISSPELT, **sections}
    data["Concurrency"] = {"MaxConcurentSessions": 2, "SyncFromPlatform": False}
    if cap_spelt_right:
        data["Concurrency"]["MaxConcurrentSessions"] = 2
    path = tmp_path / "appsettings.json"
    path.write_text(json.dumps(data))
    return str(path)


async def _serve(*args: str, request_id: str | None = None) -> tuple[int, list[str], list[str]]:
    """Run ``serve`` with ``args`` until it listens, make one request (with ``request_id``), stop it with
    SIGTERM; its exit code, stdout lines and stderr lines."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, "--host", "127.0.0.1", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=_env())
    try:
        stderr_read = asyncio.ensure_future(proc.stderr.read())  # read all along: a full pipe would block it
        first = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if "listening" in first and request_id is not None:
            http = AsyncHTTPClient(force_instance=True)
            response = await http.fetch(f"http://127.0.0.1:{port}/api/session/status/no-such-request",
                                        headers={"X-Request-Id": request_id}, raise_error=False)
            http.close()
            assert response.code == 404
        if proc.returncode is None and "listening" in first:
            proc.terminate()
        rest = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        code = await asyncio.wait_for(proc.wait(), 30)
        err = (await asyncio.wait_for(stderr_read, 30)).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return code, (first + rest).splitlines(), err.splitlines()


def test_version_prints_the_installed_packages_version() -> None:
    result = _cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"iqra-gateway {importlib.metadata.version('iqra-gateway')}\n"


def test_a_checkout_that_was_never_installed_reads_its_version_from_setup_py() -> None:
    version = package_version("iqra-gateway-not-installed-anywhere")
    number, note = version.split(" ", 1)
    assert note == "(source checkout, not installed)"
    assert re.search(rf'^\s*version="{re.escape(number)}",$', (ROOT / "setup.py").read_text(), re.MULTILINE)


def test_an_unknown_log_level_or_format_is_refused_before_or_after_the_command() -> None:
    for args in (["--log-level", "verbose", "check-config", "--config", "x.json"],
                 ["check-config", "--config", "x.json", "--log-level", "verbose"]):
        result = _cli(*args)
        assert result.returncode == 2
        assert ("argument --log-level: invalid choice: 'verbose' "
                "(choose from 'debug', 'info', 'warning', 'error', 'critical')") in result.stderr
        assert "Traceback" not in result.stderr
    result = _cli("serve", "--config", "x.json", "--log-format", "xml")
    assert result.returncode == 2
    assert "argument --log-format: invalid choice: 'xml' (choose from 'text', 'json')" in result.stderr


async def test_serve_writes_json_lines_with_the_request_id_and_every_config_warning(tmp_path) -> None:
    config = _config(tmp_path)
    # The options after the command, as an operator appends them to a command line.
    code, out, err = await _serve("serve", "--config", config, "--log-format", "json", "--log-level", "info",
                                  request_id="trace-7f3a")
    assert code == 0 and "listening" in out[0]
    records = [json.loads(line) for line in err]  # every line of stderr is one JSON object
    assert records and all({"time", "level", "logger", "message", "request_id"} <= set(r) for r in records)
    (access,) = [r for r in records if r["logger"] == "gateway.access"]
    assert access["request_id"] == "trace-7f3a" and access["level"] == "INFO"
    assert access["message"].startswith("404 GET /api/session/status/no-such-request")
    # Each warning in full: one template for all of them made the repeat throttle fold all but the first.
    assert [r["message"] for r in records if r["level"] == "WARNING"] == [f"config: {w}" for w in WARNINGS]


async def test_the_configurations_log_format_applies_unless_the_command_line_names_one(tmp_path) -> None:
    config = _config(tmp_path, Logging={"LogLevel": {"Default": "Information"}, "Format": "json"})
    code, _, err = await _serve("serve", "--config", config)
    assert code == 0
    assert [json.loads(line)["level"] for line in err if "config:" in line] == ["WARNING"] * 3
    # The command line wins; --log-level after the command leaves out the INFO records.
    code, _, err = await _serve("--log-format", "text", "serve", "--config", config, "--log-level", "warning")
    assert code == 0
    assert not any(line.startswith("{") for line in err)
    assert [line.split(" config: ", 1)[1] for line in err if " config: " in line] == list(WARNINGS)
    assert not any(" INFO " in line for line in err)


def test_check_config_lists_warnings_with_the_problems_they_explain(tmp_path) -> None:
    result = _cli("check-config", "--config", _config(tmp_path, cap_spelt_right=False))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("error: Concurrency: no session cap: set Concurrency.MaxConcurrentSessions")
    assert lines[1:] == [f"warning: {w}" for w in WARNINGS]
    good = _cli("check-config", "--config", _config(tmp_path))
    assert good.returncode == 0
    assert good.stdout.splitlines() == [*(f"warning: {w}" for w in WARNINGS), "OK"]


async def test_serve_lists_warnings_with_the_problems_it_refuses_to_start_on(tmp_path) -> None:
    config = _config(tmp_path, cap_spelt_right=False)
    code, out, err = await _serve("serve", "--config", config)
    assert code == 1 and out == []
    assert err[0] == "The configuration has problems:"
    assert err[1].startswith("  error: Concurrency: no session cap")
    assert err[2:] == [f"  warning: {w}" for w in WARNINGS]
    # In JSON every line is still a record a collector can read.
    code, _, err = await _serve("serve", "--config", config, "--log-format", "json")
    assert code == 1
    records = [json.loads(line) for line in err]
    assert [r["level"] for r in records] == ["ERROR", "WARNING", "WARNING", "WARNING", "ERROR"]
    assert records[0]["message"].startswith("config: Concurrency: no session cap")
    assert records[-1]["message"] == "the configuration has problems; not starting"
