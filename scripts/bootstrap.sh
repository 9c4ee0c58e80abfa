# Shared install steps of scripts/test.sh and scripts/demo.sh (sourced from the repository root).
#
# Every step prints one line on stderr: what it installs, or that its result is up to date and it skips.
# "Up to date" is decided by content, not by time stamps: .venv keeps a checksum of setup.py and
# pyproject.toml per install flavour, and each node_modules/ a checksum of the package-lock.json it was
# installed from. A second run therefore only checks, and starts in a moment.

_step() {
  echo "setup: $*" >&2
}

_checksum() {
  cat "$@" | cksum
}

# _present PKG: true when what the Debian package PKG provides is already on this machine.
_present() {
  case "$1" in
    redis-server) command -v redis-server ;;
    nodejs) command -v node ;;
    # Debian installs them in /usr/sbin, which is not on a user's PATH (IQRA_SBIN_PATH: where else to look).
    haproxy|nginx) command -v "$1" || PATH="${IQRA_SBIN_PATH:-/usr/sbin:/sbin}" command -v "$1" ;;
    # Debian's python3 lacks ensurepip until python3-venv is installed, so `python3 -m venv` fails.
    python3-venv) python3 -c 'import ensurepip, venv' ;;
    *) command -v "$1" ;;
  esac >/dev/null 2>&1
}

_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    _step "cannot run '$*': not root and no sudo; install the packages above as root, then run this again"
    exit 1
  fi
}

# bootstrap_system_packages PKG...: install, with apt-get, the Debian packages whose commands are missing.
bootstrap_system_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    _present "$pkg" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    _step "system packages present: $*"
    return
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    _step "missing: ${missing[*]}; this is not Debian (no apt-get): install them with your package manager, then run this again"
    exit 1
  fi
  _step "installing system packages: ${missing[*]}"
  _as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# _stamp_of SPEC: where .venv records that the project was installed as SPEC ("." or ".[test]").
_stamp_of() {
  local flavour
  flavour=$(printf '%s' "$1" | tr -cd 'a-z')
  echo ".venv/.iqra-installed-${flavour:-base}"
}

_create_venv() {
  if ! command -v python3 >/dev/null 2>&1; then
    bootstrap_system_packages python3
  fi
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    _step "Python 3.11 or newer is needed; python3 is $(python3 -V 2>&1 | cut -d' ' -f2)"
    exit 1
  fi
  _present python3-venv || bootstrap_system_packages python3-venv
  _step "creating .venv"
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
}

# bootstrap_venv SPEC [COVERING_SPEC...]: .venv with the project installed editable as SPEC
# (`pip install -e SPEC`). Skipped when setup.py and pyproject.toml are unchanged since SPEC, or a
# COVERING_SPEC that includes it (".[test]" includes "."), was installed.
bootstrap_venv() {
  local spec=$1 want candidate
  [ -x .venv/bin/python ] || _create_venv
  want=$(_checksum setup.py pyproject.toml)
  for candidate in "$@"; do
    if [ "$(cat "$(_stamp_of "$candidate")" 2>/dev/null)" = "$want" ]; then
      _step "Python packages up to date (pip install -e '$candidate')"
      return
    fi
  done
  _step "installing Python packages (pip install -e '$spec')"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
  echo "$want" > "$(_stamp_of "$spec")"
}

# bootstrap_node_packages DIR...: `npm ci` in each DIR (which has a package-lock.json) unless its
# node_modules/ was installed from the same lock file. Node.js and npm are installed first when needed.
bootstrap_node_packages() {
  local dir want stamp
  for dir in "$@"; do
    want=$(_checksum "$dir/package-lock.json")
    stamp="$dir/node_modules/.iqra-installed-lock"
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
      _step "npm packages of $dir/ up to date"
      continue
    fi
    _present nodejs && _present npm || bootstrap_system_packages nodejs npm
    _step "npm ci $dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$want" > "$stamp"
  done
}
