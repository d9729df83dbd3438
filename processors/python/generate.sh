#!/usr/bin/env bash
# Generates the Python code of the contract (dsr.system.v1 and the common
# types it uses) from proto/: buf builds the module into a descriptor set,
# and grpcio-tools' protoc writes the messages and the gRPC stubs from it.
# Run from anywhere; needs the checkout's npm packages (buf) and the
# virtual environment of requirements.txt (`.venv`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
out="$here/gen"
rm -rf "$out" && mkdir -p "$out"
image="$(mktemp)"
trap 'rm -f "$image"' EXIT
(cd "$root" && npx --no-install buf build -o "$image#format=binpb")
"$here/.venv/bin/python" -m grpc_tools.protoc \
  --descriptor_set_in="$image" \
  --python_out="$out" --grpc_python_out="$out" \
  dsr/common/v1/common.proto dsr/system/v1/system.proto
echo "generated under $out"
