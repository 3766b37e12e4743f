#!/usr/bin/env bash
# OpenAPI conformance: schemathesis (from PyPI, in a venv) against a live `beast run` serving the
# example challenges plus one with an attachment. Passes when schemathesis finds no server error
# (5xx) and no response that violates the published document (status, content type, headers,
# body schema). Bounded: few examples per operation, a time budget, a per-request timeout.
#
#   .ci/schemathesis.sh                  # uses target/release/beast, else target/debug/beast
#   BEAST_BIN=path/to/beast .ci/schemathesis.sh
#
# Env: BEAST_BIN, ST_VENV (default .ci/.venv-schemathesis), ST_MAX_EXAMPLES (default 20),
# ST_MAX_TIME (seconds the schemathesis run may take before it counts as failed, default 600),
# ST_VERSION (pip requirement, default schemathesis>=4,<5), ST_SEED (default 8).
#
# beast runs with its own --instance id, --state-dir, port range and listen port; on exit
# (success or failure) it is stopped and exactly the containers labelled with that instance are
# removed.
#
# Excluded, because its response never ends (a request could only time out):
#   GET /api/v1/notification/events   server-sent events; its head, filters and errors are covered
#                                     by the router tests in src/api/notification.rs
# and `follow` of GET /api/v1/status/challenges/{name}/logs is always false (with true the
# response is a chunked stream that stays open); its other parameters are fuzzed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$(pwd)
root=$(pwd)

venv=${ST_VENV:-$root/.ci/.venv-schemathesis}
max_examples=${ST_MAX_EXAMPLES:-20}
max_time=${ST_MAX_TIME:-600}
requirement=${ST_VERSION:-schemathesis>=4,<5}

bin=${BEAST_BIN:-}
if [ -z "$bin" ]; then
  for candidate in target/release/beast target/debug/beast; do
    if [ -x "$candidate" ]; then bin=$root/$candidate; break; fi
  done
fi
if [ -z "$bin" ]; then
  cargo build --quiet
  bin=$root/target/debug/beast
fi

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet "$requirement"
fi
"$venv/bin/st" --version

if ! docker image inspect beast-examples/busybox:1 >/dev/null 2>&1; then
  examples/build-images.sh
fi

instance="st-$$-$RANDOM"
work=$(mktemp -d)
beast_pid=
cleanup() {
  status=$?
  if [ -n "$beast_pid" ] && kill -0 "$beast_pid" 2>/dev/null; then
    kill -TERM "$beast_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$beast_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$beast_pid" 2>/dev/null || true
    wait "$beast_pid" 2>/dev/null || true
  fi
  "$repo_root/examples/cleanup-instance.sh" "$instance"
  if [ "$status" != 0 ] && [ -f "$work/beast.log" ]; then
    echo "--- last lines of beast's log ---" >&2
    tail -n 40 "$work/beast.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT INT TERM

# The examples, without their fixed host ports (ports come from this run's range), plus a static
# challenge with an attachment for the info namespace (at the top of its folder: schemathesis
# filters out most path parameters that hold a `/`, which fails its health check).
mkdir -p "$work/manifests" "$work/state"
for dir in examples/*/; do
  [ -f "$dir/challenge.yaml" ] || continue
  name=$(basename "$dir")
  mkdir -p "$work/manifests/$name"
  sed '/hostPort:/d' "$dir/challenge.yaml" >"$work/manifests/$name/challenge.yaml"
done
mkdir -p "$work/manifests/handout"
printf 'read me\n' >"$work/manifests/handout/handout.txt"
cat >"$work/manifests/handout/challenge.yaml" <<'YAML'
apiVersion: beast/v1
kind: Challenge
metadata:
  name: handout
spec:
  description: "A file to download."
  flag: "flag{handout}"
  attachments: [handout.txt]
YAML

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
base=$((40000 + (RANDOM % 200) * 50))
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BEAST_JWT_SECRET=$secret

"$bin" run --manifests "$work/manifests" --state-dir "$work/state" --instance "$instance" \
  --port-range "$base-$((base + 49))" --listen "127.0.0.1:$port" --resync 10s \
  >"$work/beast.log" 2>&1 &
beast_pid=$!
api="http://127.0.0.1:$port"

ready=
for _ in $(seq 1 120); do
  if curl -fsS "$api/readyz" >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$beast_pid" 2>/dev/null || { echo "beast exited before it was ready" >&2; exit 1; }
  sleep 0.5
done
[ -n "$ready" ] || { echo "beast was not ready within 60 s" >&2; exit 1; }

token=$("$bin" token --role admin --ttl 1h)

# Real identifiers, used most of the time in place of random ones, so that requests reach
# existing challenges, attachments, tasks and webhooks instead of stopping at 404.
cat >"$work/schemathesis.toml" <<'TOML'
[dictionaries.names]
values = ["echo-tcp", "web-notes", "healthy-service", "replicated-oracle", "handout", "api-example"]
[dictionaries.actions]
values = ["deploy", "undeploy", "redeploy"]
[dictionaries.files]
values = ["handout.txt"]
[dictionaries.tasks]
values = ["t-1", "t-2", "t-3", "t-4", "t-5", "t-6", "t-7", "t-8"]
[dictionaries.webhooks]
values = ["wh-1", "wh-2", "wh-3"]

[parameters]
"path.name" = { dictionary = "names", probability = 0.7 }
"path.action" = { dictionary = "actions", probability = 0.8 }
"path.file" = { dictionary = "files", probability = 0.7 }
"path.id" = { dictionary = "tasks", probability = 0.5 }
"query.follow" = "false"
TOML

# Checks: the two the conformance run is about (no 5xx, responses as published) plus the
# conformance of statuses, content types and headers. Left out: positive_data_acceptance (a
# manifest can match the schema and still be refused: its image may not exist, its name may be
# taken) and the stateful ones that assume a created resource is fetchable at once.
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection

# Run from the temporary folder: schemathesis keeps a cache (.schemathesis/) in its working dir.
cd "$work"
timeout --kill-after=30 "$max_time" \
  "$venv/bin/st" --config-file "$work/schemathesis.toml" --no-color run "$api/api/v1/openapi.json" \
  --checks "$checks" \
  --header "Authorization: Bearer $token" \
  --exclude-path /api/v1/notification/events \
  --max-examples "$max_examples" \
  --request-timeout 10 \
  --seed "${ST_SEED:-8}" \
  --workers 2
echo "schemathesis: no server errors, no responses violating the schema"
