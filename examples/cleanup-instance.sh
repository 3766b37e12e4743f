#!/usr/bin/env bash
# Removes exactly what one beast instance made: its Swarm services, containers, networks and egress
# rules (iptables rules commented `beast:INSTANCE:...`). Never anything else.
# Usage: examples/cleanup-instance.sh INSTANCE (also used by the tests, benchmarks and CI)
set -u
instance=${1:?usage: cleanup-instance.sh INSTANCE}
# Swarm services first (`run --runtime swarm`): Swarm would replace their containers otherwise.
services=$(docker service ls -q --filter "label=beast.instance=$instance" 2>/dev/null || true)
if [ -n "$services" ]; then
  # shellcheck disable=SC2086
  docker service rm $services >/dev/null 2>&1 || true
  # Their tasks leave the overlay network on their own, within seconds.
  for _ in $(seq 1 30); do
    [ -z "$(docker ps -aq --filter "label=beast.instance=$instance" --filter "label=com.docker.swarm.service.id" 2>/dev/null)" ] && break
    sleep 0.5
  done
fi
ids=$(docker ps -aq --filter "label=beast.instance=$instance" 2>/dev/null || true)
if [ -n "$ids" ]; then
  # shellcheck disable=SC2086
  docker rm -f $ids >/dev/null 2>&1 || true
fi
# A swarm releases an overlay's endpoints a moment after its tasks are gone: try a few times.
for _ in $(seq 1 20); do
  nets=$(docker network ls -q --filter "label=beast.instance=$instance" 2>/dev/null || true)
  [ -z "$nets" ] && break
  # shellcheck disable=SC2086
  docker network rm $nets >/dev/null 2>&1 || true
  [ -z "$services" ] && break
  sleep 1
done
if command -v iptables >/dev/null 2>&1; then
  for chain in DOCKER-USER FORWARD INPUT; do
    iptables -w -S "$chain" 2>/dev/null | grep -F "beast:$instance:" | while read -r line; do
      # The rule as listed, with -A turned into -D; comments hold no spaces or quotes but the
      # listing quotes them.
      eval "iptables -w ${line/-A /-D }" 2>/dev/null || true
    done
  done
fi
exit 0
