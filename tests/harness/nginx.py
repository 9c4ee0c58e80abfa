"""nginx for the deployment tests: the shipped ``deploy/nginx.conf`` (an ``http``-block file), with only its
listening port and its instances' addresses changed, included by a minimal main configuration and run in
the foreground by the test.

A missing nginx fails the test with what to install (never a skip): ``scripts/test.sh`` installs it.
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

TEMPLATE = ROOT / "deploy" / "nginx.conf"
INSTALL_HINT = ("nginx is not installed: `bash scripts/test.sh` installs it (Debian's package), "
                "or run `apt-get install nginx`")

_LISTEN = re.compile(r"^(\s*listen\s+)8080;", re.MULTILINE)
#: An instance's own upstream (named by its Instance.Id) and its first server: the instance's address.
_OWN_UPSTREAM = re.compile(r"^upstream\s+(\S+)\s*\{\s*server\s+([0-9.]+:[0-9]+);", re.MULTILINE)
_BALANCED = "iqra_gateways"


def nginx_binary() -> str:
    """The nginx command (Debian puts it in /usr/sbin, off a user's PATH); fails the test if absent."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return found


def render(template: str, *, listen: str, servers: Mapping[str, str]) -> str:
    """``template`` listening on ``listen`` (``host:port``), every address of an instance replaced by the
    address it has in ``servers``; everything else as shipped."""
    text, listens = _LISTEN.subn(rf"\g<1>{listen};", template)
    assert listens == 1, "deploy/nginx.conf must have one `listen 8080;` line"
    addresses = {name: address for name, address in _OWN_UPSTREAM.findall(text) if name != _BALANCED}
    assert sorted(addresses) == sorted(servers), f"deploy/nginx.conf has upstreams {list(addresses)}"
    for name, address in addresses.items():
        text = text.replace(f" {address}", f" {servers[name]}")
    return text


def main_config(folder: Path, site: Path) -> str:
    """What /etc/nginx/nginx.conf would be around the site file, with every path in ``folder``."""
    temp = "\n".join(f"    {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'nginx-error.log'} warn;\nevents {{}}\n"
            f"http {{\n    access_log {folder / 'nginx-access.log'};\n{temp}\n    include {site};\n}}\n")


class Nginx:
    """``nginx -g 'daemon off;'`` on the rendered site file in ``folder``."""

    def __init__(self, folder: Path, *, host: str, port: int, servers: Mapping[str, str]) -> None:
        self.folder = folder / "nginx"
        self.folder.mkdir()
        self.host, self.port = host, port
        site = self.folder / "iqra-gateway.conf"
        site.write_text(render(TEMPLATE.read_text(), listen=f"{host}:{port}", servers=servers))
        self.config = self.folder / "nginx.conf"
        self.config.write_text(main_config(self.folder, site))
        self.proc: subprocess.Popen[bytes] | None = None

    def _command(self, *args: str) -> list[str]:
        return [nginx_binary(), "-c", str(self.config), "-p", str(self.folder), *args]

    def start(self, timeout: float = 10.0) -> None:
        checked = subprocess.run(self._command("-t"), capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with (self.folder / "nginx.out").open("wb") as out:
            self.proc = subprocess.Popen(self._command("-g", "daemon off;"), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "nginx exited:\n" + self.log()
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:  # not listening yet: another process's port gives no event to wait on
                assert time.monotonic() < deadline, "nginx did not listen:\n" + self.log()
                time.sleep(0.05)

    def log(self) -> str:
        return "\n".join(path.read_text() for path in (self.folder / "nginx.out", self.folder / "nginx-error.log")
                         if path.exists())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
