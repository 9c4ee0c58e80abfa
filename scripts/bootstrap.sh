# Shared install steps for scripts/test.sh and scripts/demo.sh. Each step is idempotent and quick when
# everything is already there, so the scripts can run on every invocation.

_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# bootstrap_system_packages PKG...: install the Debian packages whose commands are missing.
bootstrap_system_packages() {
  local missing=() pkg cmd
  for pkg in "$@"; do
    case "$pkg" in
      redis-server) cmd=redis-server ;;
      nodejs) cmd=node ;;
      chromium) cmd=chromium ;;
      *) cmd="$pkg" ;;
    esac
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing system packages: ${missing[*]}" >&2
    _as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# bootstrap_venv SPEC: a virtual environment in .venv with the project installed editable.
bootstrap_venv() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -e "$1"
}

# bootstrap_node_packages: npm packages of every folder that declares some (the widget's SignalR bundle,
# the interop tests' clients). `npm ci` follows the lock file exactly.
bootstrap_node_packages() {
  local dir
  for dir in static tests/signalr/interop tests/gateway/live/interop; do
    if [ -f "$dir/package-lock.json" ] && [ ! -d "$dir/node_modules" -o "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  done
}
