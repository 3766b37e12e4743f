#!/usr/bin/env bash
# Load on the API with a real load generator (wrk, Debian's), on loopback:
#   GET /api/v1/status/challenges (20 challenges) and PUT /api/v1/manage/challenges/{name}.
# Prints requests/s and latency percentiles. Targets on a 2-core box: GET >= 20,000 req/s, p99 <= 5 ms.
#   benches/api-load.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
examples/build-images.sh >/dev/null
cargo build --release --quiet
work=$(mktemp -d)
instance="bench-api-$$"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export BEAST_JWT_SECRET="bench-secret-bench-secret-bench-secret-0123"
cleanup() {
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  docker ps -aq --filter "label=beast.instance=$instance" | xargs -r docker rm -f >/dev/null
  rm -rf "$work"
}
mkdir -p "$work/m"
for i in $(seq 1 20); do
  cat >"$work/m/c$i.yaml" <<YAML
apiVersion: beast/v1
kind: Challenge
metadata: {name: c$i, labels: {category: bench}}
spec:
  description: challenge $i
  category: misc
  points: $((i * 10))
  image: beast-examples/busybox:1
  command: [sleep, "3600"]
  replicas: $(( i <= 4 ? 1 : 0 ))
YAML
done
BEAST_LOG=warn target/release/beast run --manifests "$work/m" --state-dir "$work/state" \
  --instance "$instance" --listen "127.0.0.1:$port" --port-range 49000-49099 &
pid=$!
trap cleanup EXIT
token=$(target/release/beast token --role admin --ttl 1h)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1
done
cat >"$work/put.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local name = "load-" .. (n % 50)
  local body = "apiVersion: beast/v1\nkind: Challenge\nmetadata: {name: " .. name .. "}\nspec:\n  image: beast-examples/busybox:1\n  replicas: 0\n  description: write " .. n .. "\n"
  local headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["Content-Type"] = "application/yaml"
  return wrk.format("PUT", "/api/v1/manage/challenges/" .. name, headers, body)
end
LUA
echo "== GET /api/v1/status/challenges (20 challenges, JWT auth), ${secs}s, 2 threads, 32 connections"
wrk -t2 -c32 -d"${secs}s" --latency -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$port/api/v1/status/challenges" | grep -E "Requests/sec|Latency|50%|90%|99%|requests in"
echo "== PUT /api/v1/manage/challenges/{name} (fsync'd writes to 50 names), ${secs}s, 2 threads, 8 connections"
wrk -t2 -c8 -d"${secs}s" --latency -H "Authorization: Bearer $token" -s "$work/put.lua" \
  "http://127.0.0.1:$port" | grep -E "Requests/sec|Latency|50%|90%|99%|requests in|Non-2xx"
