#!/usr/bin/env bash
# Regenerates the Python code for protos/ into gen/python/evolutivo (the only place generated code lives).
# Uses the protoc bundled with grpcio-tools so the output matches the pinned protobuf runtime;
# googleapis types (google.type.Money, google.rpc.*) come from googleapis-common-protos at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=gen/python
# Generate into a scratch folder and sync only what changed, so a process importing gen/ while this
# runs (another test run, a running service) never sees the package half deleted.
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
mapfile -t files < <(cd protos && find evolutivo -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc \
  -I protos -I third_party/googleapis \
  --python_out="$OUT" --grpc_python_out="$OUT" \
  --mypy_out="$OUT" --mypy_grpc_out="$OUT" \
  "${files[@]}" 2> >(grep -v "^Writing mypy" >&2)
# protoc writes a *_grpc module for every file; keep only those of files that declare a service.
for f in "$OUT"/evolutivo/*/v1/*_pb2_grpc.py; do
  grep -q "Servicer" "$f" || rm -f "$f" "${f}i"
done
# Make every generated folder a regular package, typed.
find "$OUT/evolutivo" -type d -exec touch {}/__init__.py \;
touch "$OUT/evolutivo/py.typed"
"$PY" - "$OUT/evolutivo" "$DEST/evolutivo" <<'PY'
import filecmp, os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
for root, dirs, files in os.walk(src):
    target = os.path.join(dst, os.path.relpath(root, src))
    os.makedirs(target, exist_ok=True)
    for name in files:
        if not os.path.exists(os.path.join(target, name)) or not filecmp.cmp(os.path.join(root, name), os.path.join(target, name), shallow=False):
            shutil.copy2(os.path.join(root, name), os.path.join(target, name))
for root, dirs, files in os.walk(dst, topdown=False):
    if "__pycache__" in root:
        continue
    origin = os.path.join(src, os.path.relpath(root, dst))
    for name in files:
        if not os.path.exists(os.path.join(origin, name)):
            os.remove(os.path.join(root, name))
    if not os.path.isdir(origin):
        shutil.rmtree(root, ignore_errors=True)
PY
