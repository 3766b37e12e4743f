#!/usr/bin/env bash
# Brings up the example challenges: builds their images, builds beast, and runs it in the
# foreground on the examples directory (Ctrl-C stops beast; the challenges keep running).
#   examples/up.sh [extra beast run flags]
set -euo pipefail
cd "$(dirname "$0")/.."
examples/build-images.sh
cargo build --release --quiet
echo "beast API on http://127.0.0.1:5005 — try: curl -s 127.0.0.1:5005/api/v1/status/challenges"
exec target/release/beast run --manifests examples --state-dir .beast "$@"
