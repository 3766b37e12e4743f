#!/usr/bin/env bash
# The `docker stack deploy` half of the swarm benchmark: N services (default 20), each one replica
# of the busybox image from the cluster's registry with a host-mode published port (dnsrr
# endpoints: no IPVS here, so no VIPs and no routing mesh), deployed as one compose v3 stack and
# timed until every task runs; the stack is then removed. beast's half converges the same 20
# services as challenges (docs/benchmarks.md).
#   eval "$(examples/swarm-cluster.sh env NAME)"; benches/swarm_stack.sh   # an existing swarm
#   benches/swarm_stack.sh --up                # makes a cluster for the run and removes it after
#   SWARM_STACK_RUNS=3 benches/swarm_stack.sh   # three deploys in a row, each timed
# Settings: SWARM_STACK_SERVICES=20, SWARM_STACK_PORT=21000 (first published port),
# SWARM_STACK_IMAGE (default $SWARM_REGISTRY/beast-examples/busybox:1), SWARM_STACK_TIMEOUT=300,
# SWARM_STACK_COMPOSE=FILE (also write the generated compose file there, for the beast half).
# Prints one line per run: "stack deploy: N services running in S s".
# Needs: docker, a swarm manager in DOCKER_HOST (or --up: root, as examples/swarm-cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

services=${SWARM_STACK_SERVICES:-20}
first_port=${SWARM_STACK_PORT:-21000}
runs=${SWARM_STACK_RUNS:-1}
timeout_s=${SWARM_STACK_TIMEOUT:-300}
stack=beast-bench-$$
cluster=
work=$(mktemp -d)

cleanup() {
  local status=$?
  if [ -n "${DOCKER_HOST:-}" ]; then docker stack rm "$stack" >/dev/null 2>&1 || true; fi
  if [ -n "$cluster" ]; then
    unset DOCKER_HOST
    examples/swarm-cluster.sh down "$cluster" || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${1:-}" = --up ]; then
  cluster=bench$$
  examples/swarm-cluster.sh up "$cluster" >/dev/null
  eval "$(examples/swarm-cluster.sh env "$cluster")"
fi
[ -n "${DOCKER_HOST:-}" ] || {
  echo "error: DOCKER_HOST must name a swarm manager: eval \"\$(examples/swarm-cluster.sh env NAME)\", or pass --up" >&2
  exit 2
}
[ "$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" = true ] ||
  { echo "error: $DOCKER_HOST is not a swarm manager" >&2; exit 2; }
image=${SWARM_STACK_IMAGE:-${SWARM_REGISTRY:?SWARM_REGISTRY or SWARM_STACK_IMAGE must be set}/beast-examples/busybox:1}

compose=$work/stack.yml
{
  echo 'version: "3.8"'
  echo 'services:'
  for i in $(seq 1 "$services"); do
    cat <<YAML
  s$i:
    image: $image
    command: ["httpd", "-f", "-p", "8080", "-h", "/"]
    ports:
      - {target: 8080, published: $((first_port + i - 1)), protocol: tcp, mode: host}
    deploy:
      replicas: 1
      endpoint_mode: dnsrr
YAML
  done
} >"$compose"
if [ -n "${SWARM_STACK_COMPOSE:-}" ]; then cp "$compose" "$SWARM_STACK_COMPOSE"; fi

running_tasks() {
  docker stack ps "$stack" --filter desired-state=running --format '{{.CurrentState}}' 2>/dev/null |
    grep -c '^Running' || true
}
gone() { ! docker network inspect "${stack}_default" >/dev/null 2>&1 && [ -z "$(docker stack ps -q "$stack" 2>/dev/null)" ]; }

for run in $(seq 1 "$runs"); do
  start=$(date +%s.%N)
  docker stack deploy --detach=true -c "$compose" "$stack" >/dev/null
  deployed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  deadline=$(($(date +%s) + timeout_s))
  until [ "$(running_tasks)" -ge "$services" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "error: after ${timeout_s}s only $(running_tasks) of $services tasks run" >&2
      docker stack ps --no-trunc "$stack" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  echo "stack deploy (run $run): $services services running in $secs s (the deploy command returned after $deployed s)"
  docker stack rm "$stack" >/dev/null
  # The next run starts from nothing: wait until the tasks and the stack's network are gone.
  deadline=$(($(date +%s) + 120))
  until gone; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "error: stack $stack not gone after 120s" >&2; exit 1; }
    sleep 0.5
  done
done
