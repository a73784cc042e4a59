#!/usr/bin/env bash
# The one pip command that installs the project's own packages. scripts/setup.sh runs it for the
# development .venv (editable, every package plus the dev tools) and every services/*/Dockerfile
# runs it for the image (the contracts, the runtime and that one service), so the command an image
# builds with is the command every `make setup` and CI run exercise.
#
#   scripts/install_packages.sh [--editable] PYTHON PACKAGE_DIR... [-r REQUIREMENTS_FILE]...
#
# PACKAGE_DIR is relative to the repository root (e.g. gen/python libs/runtime services/customer).
set -euo pipefail
cd "$(dirname "$0")/.."

editable=false
if [ "${1:-}" = --editable ]; then
  editable=true
  shift
fi
[ $# -ge 2 ] || { echo "usage: $0 [--editable] PYTHON PACKAGE_DIR... [-r REQUIREMENTS_FILE]..." >&2; exit 2; }
python=$1
shift

args=()
while [ $# -gt 0 ]; do
  case $1 in
    -r)
      args+=(-r "$2")
      shift 2
      ;;
    *)
      [ -f "$1/pyproject.toml" ] || { echo "$0: $1 is not a package directory" >&2; exit 2; }
      # "./" makes pip read a local directory, never a package name from the index.
      if $editable; then args+=(-e "./$1"); else args+=("./$1"); fi
      shift
      ;;
  esac
done

# One resolver run: the local packages depend on each other (evolutivo-runtime, evolutivo-contracts).
exec "$python" -m pip install "${args[@]}"
