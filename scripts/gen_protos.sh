#!/usr/bin/env bash
# Regenerates the Python code for protos/ into gen/python/evolutivo (the only place generated code lives).
# Uses the protoc bundled with grpcio-tools so the output matches the pinned protobuf runtime;
# googleapis types (google.type.Money, google.rpc.*) come from googleapis-common-protos at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=gen/python
rm -rf "$OUT/evolutivo"
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
