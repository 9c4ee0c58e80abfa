"""HAProxy for the deployment tests: the shipped ``deploy/haproxy.cfg``, with only its listening address and
its servers' addresses changed, run in the foreground by the test.

A missing haproxy fails the test with what to install (never a skip): ``scripts/test.sh`` installs it.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.harness.paths import ROOT

TEMPLATE = ROOT / "deploy" / "haproxy.cfg"
INSTALL_HINT = ("haproxy is not installed: `bash scripts/test.sh` installs it (Debian's package), "
                "or run `apt-get install haproxy`")

#: The template's frontend address and its server lines (``server <Instance.Id> <host:port>``).
_BIND = re.compile(r"^(\s*bind\s+):8080\s*$", re.MULTILINE)
_SERVER = re.compile(r"^(\s*server\s+(\S+)\s+)(\S+)", re.MULTILINE)


def haproxy_binary() -> str:
    """The haproxy command (Debian puts it in /usr/sbin, off a user's PATH); fails the test if absent."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return found


def render(template: str, *, listen: str, servers: Mapping[str, str]) -> str:
    """``template`` listening on ``listen`` (``host:port``), each server line pointing at the address of the
    instance it names; everything else as shipped. The template must have exactly these servers."""
    text, binds = _BIND.subn(rf"\g<1>{listen}", template)
    assert binds == 1, "deploy/haproxy.cfg must have one `bind :8080` line"
    named: list[str] = []

    def server(match: re.Match[str]) -> str:
        named.append(match.group(2))
        return f"{match.group(1)}{servers[match.group(2)]}"

    text = _SERVER.sub(server, text)
    assert sorted(named) == sorted(servers), f"deploy/haproxy.cfg names servers {named}, the test runs {list(servers)}"
    return text


class HAProxy:
    """``haproxy -db`` (foreground) on a config written to ``folder``; its log in ``folder/haproxy.log``."""

    def __init__(self, folder: Path, *, host: str, port: int, servers: Mapping[str, str]) -> None:
        self.host, self.port = host, port
        self.config = folder / "haproxy.cfg"
        self.config.write_text(render(TEMPLATE.read_text(), listen=f"{host}:{port}", servers=servers))
        self.log_path = folder / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        binary = haproxy_binary()
        checked = subprocess.run([binary, "-c", "-f", str(self.config)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "haproxy exited:\n" + self.log_path.read_text()
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:  # not listening yet: another process's port gives no event to wait on
                assert time.monotonic() < deadline, "haproxy did not listen:\n" + self.log_path.read_text()
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
