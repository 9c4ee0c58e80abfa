"""scripts/demo.sh and scripts/test.sh: one line per step, only what each needs, nothing twice.

The real scripts run in real bash on a copy of the project's install files. The package managers are the
seam: apt-get, python3, the venv's python (pip and pytest), npm and ``iqra-gateway`` are stand-ins on a PATH
of their own that record what they were asked to do and "install" what a real run would (apt-get puts the
commands of the packages it installs on the PATH, ``python3 -m venv`` makes ``.venv``, npm makes
node_modules/), so a second run sees the first one's results.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.paths import ROOT

BASH = shutil.which("bash") or "/bin/bash"
TOOLS = ("cat", "cksum", "tr", "rm", "dirname", "id", "cut", "mkdir", "cp", "chmod", "touch")
INSTALL_FILES = ("scripts/bootstrap.sh", "scripts/demo.sh", "scripts/test.sh", "setup.py", "pyproject.toml",
                 "static/package-lock.json", "tests/signalr/interop/package-lock.json",
                 "tests/gateway/live/interop/package-lock.json")
NPM_FOLDERS = ("static", "tests/signalr/interop", "tests/gateway/live/interop")


@dataclass
class Run:
    code: int
    steps: list[str]  # the scripts' own lines ("setup: ...")
    calls: list[str]  # what the package managers were asked to do, in order


class Machine:
    """A project copy and a PATH with only basic tools, python3 (without venv) and stand-ins."""

    def __init__(self, root: Path, *, debian: bool = True) -> None:
        self.project, self.bin, self.spare, self.state = (root / d for d in ("project", "bin", "spare", "state"))
        for folder in (self.bin, self.spare, self.state):
            folder.mkdir()
        self.log = root / "calls.log"
        for name in INSTALL_FILES:
            (self.project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, self.project / name)
        for tool in TOOLS:
            (self.bin / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
        here = f'"${{PWD#{self.project}/}}"'
        self._stub(self.bin / "sudo", 'exec "$@"')
        self._stub(self.bin / "python3", f"""
            case "$*" in
              *ensurepip*) [ -e {self.state}/python3-venv ]; exit ;;
              *version_info*) exit 0 ;;
              "-m venv .venv") echo "python3 $*" >> {self.log}
                mkdir -p .venv/bin && cp {self.spare}/venv-python .venv/bin/python
                cp {self.spare}/iqra-gateway .venv/bin/iqra-gateway ;;
            esac""")
        self._stub(self.spare / "venv-python", f'echo "python $*" >> {self.log}')
        self._stub(self.spare / "iqra-gateway", f'echo "iqra-gateway $*" >> {self.log}')
        self._stub(self.spare / "npm", f'echo "npm $* in "{here} >> {self.log}; mkdir -p node_modules')
        for command in ("node", "redis-server", "chromium", "haproxy", "nginx"):
            self._stub(self.spare / command, "exit 0")
        if debian:
            self._stub(self.bin / "apt-get", f"""
                [ "$1" = install ] || exit 0
                echo "apt-get $*" >> {self.log}
                for pkg in "$@"; do
                  case "$pkg" in
                    -*|install) ;;
                    python3-venv) touch {self.state}/python3-venv ;;
                    nodejs) cp {self.spare}/node {self.bin}/node ;;
                    *) cp {self.spare}/$pkg {self.bin}/$pkg ;;
                  esac
                done""")

    def _stub(self, path: Path, body: str) -> None:
        path.write_text(f"#!{BASH}\n{body}\n")
        path.chmod(0o755)

    def run(self, script: str, *args: str) -> Run:
        self.log.write_text("")
        done = subprocess.run([BASH, str(self.project / "scripts" / script), *args], capture_output=True,
                              text=True, timeout=60, env={"PATH": str(self.bin), "HOME": str(self.state),
                                   # not this machine's /usr/sbin, where a real haproxy or nginx may be
                                   "IQRA_SBIN_PATH": str(self.bin)},
                              check=False)
        steps = [line for line in done.stderr.splitlines() if line.startswith("setup: ")]
        assert steps == done.stderr.splitlines(), done.stderr  # nothing but the step lines
        return Run(done.returncode, steps, self.log.read_text().splitlines())


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


APT = "apt-get install -y -qq --no-install-recommends"
PIP = "python -m pip install -q --disable-pip-version-check"
NPM_CI = "npm ci --no-audit --no-fund --loglevel=error in"


@dataclass
class Expected:
    args: tuple[str, ...]
    first_steps: list[str]
    first_calls: list[str]
    second_steps: list[str]  # a second run only checks: every step is up to date
    second_calls: list[str]


EXPECTED = {
    # The demo installs only what it needs: no redis-server, no Chromium, no test-only Node packages.
    "demo.sh": Expected(
        args=("--port", "9000"),
        first_steps=["setup: installing system packages: python3-venv",
                     "setup: creating .venv",
                     "setup: installing Python packages (pip install -e '.')",
                     "setup: installing system packages: nodejs npm",
                     "setup: npm ci static/",
                     "setup: starting iqra-gateway demo --port 9000"],
        first_calls=[f"{APT} python3-venv", "python3 -m venv .venv", f"{PIP} --upgrade pip", f"{PIP} -e .",
                     f"{APT} nodejs npm", f"{NPM_CI} static", "iqra-gateway demo --port 9000"],
        second_steps=["setup: Python packages up to date (pip install -e '.')",
                      "setup: npm packages of static/ up to date",
                      "setup: starting iqra-gateway demo --port 9000"],
        second_calls=["iqra-gateway demo --port 9000"]),
    "test.sh": Expected(
        args=("-k", "signalr"),
        first_steps=["setup: installing system packages: redis-server nodejs npm chromium haproxy nginx",
                     "setup: installing system packages: python3-venv",
                     "setup: creating .venv",
                     "setup: installing Python packages (pip install -e '.[test]')",
                     *(f"setup: npm ci {folder}/" for folder in NPM_FOLDERS),
                     "setup: running pytest -k signalr"],
        first_calls=[f"{APT} redis-server nodejs npm chromium haproxy nginx", f"{APT} python3-venv", "python3 -m venv .venv",
                     f"{PIP} --upgrade pip", f"{PIP} -e .[test]", *(f"{NPM_CI} {f}" for f in NPM_FOLDERS),
                     "python -m pytest -k signalr"],
        second_steps=["setup: system packages present: redis-server nodejs npm chromium haproxy nginx",
                      "setup: Python packages up to date (pip install -e '.[test]')",
                      *(f"setup: npm packages of {folder}/ up to date" for folder in NPM_FOLDERS),
                      "setup: running pytest -k signalr"],
        second_calls=["python -m pytest -k signalr"]),
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_a_fresh_machine_gets_one_line_per_step_and_a_second_run_skips_every_step(machine, script):
    expected = EXPECTED[script]
    first = machine.run(script, *expected.args)
    assert (first.code, first.steps, first.calls) == (0, expected.first_steps, expected.first_calls)
    second = machine.run(script, *expected.args)
    assert (second.code, second.steps, second.calls) == (0, expected.second_steps, expected.second_calls)


def test_the_tests_install_includes_the_demos(machine):
    assert machine.run("test.sh").code == 0
    assert machine.run("demo.sh").calls == ["iqra-gateway demo"]


def test_a_changed_setup_or_lock_file_is_installed_again_and_nothing_else(machine):
    assert machine.run("test.sh").code == 0
    with (machine.project / "setup.py").open("a") as setup:
        setup.write("# a new dependency\n")
    lock = machine.project / "tests" / "signalr" / "interop" / "package-lock.json"
    lock.write_text(lock.read_text().replace('"lockfileVersion"', '"name": "changed", "lockfileVersion"', 1))
    again = machine.run("test.sh")
    assert again.calls == [f"{PIP} -e .[test]", f"{NPM_CI} tests/signalr/interop", "python -m pytest"]


def test_a_missing_system_package_off_debian_is_named_with_what_to_do(tmp_path):
    machine = Machine(tmp_path, debian=False)
    run = machine.run("test.sh")
    assert run.code == 1
    assert run.steps == [("setup: missing: redis-server nodejs npm chromium haproxy nginx; this is not Debian (no apt-get): "
                          "install them with your package manager, then run this again")]
    assert run.calls == []
