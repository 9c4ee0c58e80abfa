#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k signalr`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
bootstrap_system_packages redis-server nodejs npm chromium haproxy nginx
bootstrap_venv '.[test]'
# static/: the browser bundles; the interop folders: the @microsoft/signalr Node clients the tests drive.
bootstrap_node_packages static tests/signalr/interop tests/gateway/live/interop
_step "running pytest $*"
exec .venv/bin/python -m pytest "$@"
