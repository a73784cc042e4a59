#!/usr/bin/env bash
# Idempotent set-up of a development machine that has Python 3.11+ (and node/npm for buf):
#   * creates .venv if it is missing (and stops if an existing one has no Python 3.11+),
#   * installs the generated contracts, the shared runtime, the local stack launcher, the `evolutivo`
#     command (cli/) and every service under services/ in editable mode, plus the pinned dev tools
#     (requirements-dev.txt),
#   * installs buf from npm (package.json / package-lock.json) into node_modules/.
# Re-running it is cheap: when none of the package definitions changed since the last successful
# run (stamp in .venv), it does nothing.  FORCE=1 reinstalls anyway.  PYTHON3=/path/to/python picks
# the interpreter used to create .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.evolutivo-setup-stamp"
TRYTON_VENV=.venv-tryton

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# Runs a command with its output in $LOG; shows the end of it only when the command fails.
quietly() {
  if ! "$@" >>"$LOG" 2>&1; then
    printf '[setup] error: %s failed; last lines of %s:\n' "$*" "$LOG" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}

is_py311() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; }

find_python() {
  local candidate
  for candidate in "${PYTHON3:-}" python3 python3.14 python3.13 python3.12 python3.11 python; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if is_py311 "$candidate"; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

# --- virtual environment -------------------------------------------------------------------------
if [ -e "$VENV" ] && ! is_py311 "$VENV/bin/python"; then
  die "$VENV exists but has no working Python 3.11+; remove it and run this again"
fi
if [ ! -e "$VENV" ]; then
  PY3=$(find_python) || die "Python 3.11 or newer is required (set PYTHON3=/path/to/python3.11+)"
  say "creating $VENV with $("$PY3" --version 2>&1)"
  "$PY3" -m venv "$VENV" \
    || die "could not create $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
fi
PY="$VENV/bin/python"
LOG="$VENV/setup.log"
: >"$LOG"

# --- what to install -----------------------------------------------------------------------------
# cli: the `evolutivo` operator command (.venv/bin/evolutivo, docs/cli.md).
# tools/reconcile: `evolutivo-reconcile`, the books checked across the databases (docs/reconciliation.md).
packages=(gen/python libs/runtime deploy/local cli tools/reconcile)
for pyproject in services/*/pyproject.toml; do
  [ -e "$pyproject" ] || continue  # no services yet
  packages+=("$(dirname "$pyproject")")
done

# Fingerprint of everything that decides what gets installed.
fingerprint() {
  "$PY" - "$@" <<'EOF'
import hashlib, sys
from pathlib import Path
h = hashlib.sha256(sys.version.encode())
for name in sorted(sys.argv[1:]):
    path = Path(name)
    h.update(name.encode() + b"\0")
    h.update(path.read_bytes() if path.is_file() else b"<missing>")
print(h.hexdigest())
EOF
}
inputs=(scripts/setup.sh scripts/install_packages.sh requirements-dev.txt requirements-tryton.txt package.json package-lock.json)
for package in "${packages[@]}"; do inputs+=("$package/pyproject.toml"); done
want=$(fingerprint "${inputs[@]}")
have=$(cat "$STAMP" 2>/dev/null || true)
buf_ok=true
if command -v npm >/dev/null 2>&1 && [ ! -x node_modules/.bin/buf ]; then buf_ok=false; fi
# The Tryton ERP the ERP gateway's tests run (its own virtualenv, see below).
if [ ! -x "$TRYTON_VENV/bin/trytond" ]; then buf_ok=false; fi
if [ "${FORCE:-0}" != 1 ] && [ "$want" = "$have" ] && $buf_ok; then
  say "up to date ($VENV, ${#packages[@]} packages, buf)"
  exit 0
fi
rm -f "$STAMP"

# --- Python packages ------------------------------------------------------------------------------
export PIP_DISABLE_PIP_VERSION_CHECK=1
say "upgrading pip"
quietly "$PY" -m pip install --upgrade pip
say "installing ${packages[*]} and requirements-dev.txt"
# The same script every services/*/Dockerfile runs (there without --editable, one service only).
quietly scripts/install_packages.sh --editable "$PY" "${packages[@]}" -r requirements-dev.txt

# --- Tryton (the ERP gateway's tests run a real one) -----------------------------------------------
# In its own virtualenv: trytond's pinned dependencies are not the suite's (tests/support/tryton.py).
if [ ! -e "$TRYTON_VENV" ]; then
  say "creating $TRYTON_VENV"
  quietly "$PY" -m venv "$TRYTON_VENV"
fi
say "installing requirements-tryton.txt into $TRYTON_VENV"
quietly "$TRYTON_VENV/bin/python" -m pip install -r requirements-tryton.txt

# --- buf (npm) ------------------------------------------------------------------------------------
if command -v npm >/dev/null 2>&1; then
  if [ -f package-lock.json ]; then
    say "installing buf (npm ci)"
    quietly npm ci --no-audit --no-fund
  else
    say "installing buf (npm install)"
    quietly npm install --no-audit --no-fund
  fi
  [ -x node_modules/.bin/buf ] || die "npm finished but node_modules/.bin/buf is missing"
else
  say "warning: npm not found; buf (make lint, make check-generated) will not be available"
fi

echo "$want" >"$STAMP"
say "done"
