#!/usr/bin/env bash
# Checks the multi-node test swarm (examples/swarm-cluster.sh) with plain docker commands against
# its manager, no beast involved: what the swarm runtime relies on, measured.
#   1. a 3-replica httpd service with a host-mode published port lands one task per node, and
#      each node's port answers from the host with that node's name;
#   2. tasks of two nodes reach each other over an overlay network (VXLAN between the nested
#      engines), by a dnsrr service name;
#   3. worker1 stopped (`docker stop`): the time until the manager marks it Down and until its
#      tasks run on the other nodes; worker1 started again: the time until it is Ready, and the
#      running tasks stay where they are;
#   4. an image built on the manager and pushed to the registry runs on a worker
#      (--constraint node.role==worker), which pulls it from MANAGER:5000.
# The cluster is made for the run and removed on exit, success or failure.
#   .ci/swarm-smoke.sh                     # about 1-2 minutes with beast/swarm-node:1 cached
#   SWARM_SMOKE_KEEP=1 .ci/swarm-smoke.sh  # leave the cluster up (examples/swarm-cluster.sh down NAME)
#   SWARM_HEARTBEAT=1s .ci/swarm-smoke.sh  # a lost node detected in ~4 s instead of ~13 s
# Needs: root, docker, curl; the images of examples/swarm-node-image.sh and build-images.sh
# (built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

name=${SWARM_SMOKE_NAME:-smoke$$}
# Container names, and the nodes' hostnames in the swarm: $prefix-manager, -worker1, -worker2.
prefix=beast-swarm-$name
timeout_s=${SWARM_SMOKE_TIMEOUT:-120}
port=18080
export DOCKER_BUILDKIT=0
ctx=$(mktemp -d)

cleanup() {
  local status=$?
  if [ "$status" != 0 ] && [ -n "${manager:-}" ]; then
    echo "--- the manager's view ---" >&2
    mg node ls >&2 2>&1 || true
    mg service ls >&2 2>&1 || true
  fi
  if [ -z "${SWARM_SMOKE_KEEP:-}" ]; then
    examples/swarm-cluster.sh down "$name" || true
  else
    echo "kept: examples/swarm-cluster.sh down $name" >&2
  fi
  rm -rf "$ctx"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "[swarm-smoke $(date +%T)] $*" >&2; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# Repeats a command until it succeeds; fails the run after timeout_s (or $2 seconds).
wait_until() {
  local what=$1 limit=$2 deadline
  shift 2
  deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${limit}s waiting until $what"
    sleep 0.5
  done
}

examples/swarm-cluster.sh up "$name" >/dev/null
eval "$(examples/swarm-cluster.sh env "$name" | sed 's/^export //')"
manager=$DOCKER_HOST
unset DOCKER_HOST
registry=$SWARM_REGISTRY
# The docker CLI against the manager (the host's engine stays the default for docker stop/start).
mg() { docker -H "$manager" "$@"; }
node_ip() { mg node inspect -f '{{.Status.Addr}}' "$1"; }
# "TASK NODE" for every task of a service that is meant to run and does.
running() {
  mg service ps "$1" --no-trunc --filter desired-state=running --format '{{.ID}} {{.Node}} {{.CurrentState}}' |
    awk '$3 == "Running" { print $1, $2 }'
}
count_running() { [ "$(running "$1" | wc -l)" -eq "$2" ]; }
published_port() { mg inspect -f '{{range .Status.PortStatus.Ports}}{{.PublishedPort}}{{end}}' "$1"; }
# The body of an HTTP GET, from the host.
get() { curl -fsS --max-time 3 "http://$1/"; }

# The page each task serves names the node it runs on. httpd runs in the background and the shell
# (PID 1) exits on SIGTERM: as PID 1 httpd would ignore it, and a stopped node's engine would
# then spend its whole shutdown timeout (10-15 s) waiting for its tasks.
httpd='mkdir -p /www && hostname >/www/index.html && httpd -p 8080 -h /www && trap "exit 0" TERM && while sleep 1; do :; done'

log "1. three replicas, host-mode port $port on each node"
t=$(now)
mg service create -d -q --name web --replicas 3 --hostname '{{.Node.Hostname}}' \
  --publish "mode=host,target=8080,published=$port" beast-examples/busybox:1 sh -c "$httpd" >/dev/null 2>&1
wait_until "3 tasks of web run" "$timeout_s" count_running web 3
web_s=$(since "$t")
nodes_used=$(running web | awk '{ print $2 }' | sort -u | wc -l)
[ "$nodes_used" = 3 ] || fail "web's 3 tasks run on $nodes_used nodes, not 3: $(running web)"
for node in "$prefix-manager" "$prefix-worker1" "$prefix-worker2"; do
  ip=$(node_ip "$node")
  body=$(get "$ip:$port") || fail "$ip:$port ($node) does not answer"
  [ "$body" = "$node" ] || fail "$ip:$port answered '$body', not $node"
done
log "   running on 3 nodes after ${web_s}s; each node's $port answers with its own name"
mg service rm web >/dev/null

log "2. overlay network across nodes, dnsrr endpoint"
mg network create -d overlay smoke-net >/dev/null
mg service create -d -q --name ow --replicas 2 --network smoke-net --endpoint-mode dnsrr \
  --constraint node.role==worker --hostname '{{.Node.Hostname}}' \
  beast-examples/busybox:1 sh -c "$httpd" >/dev/null 2>&1
mg service create -d -q --name probe --network smoke-net --constraint node.role==manager \
  beast-examples/busybox:1 sleep 1d >/dev/null 2>&1
wait_until "2 tasks of ow run" "$timeout_s" count_running ow 2
wait_until "probe runs" "$timeout_s" count_running probe 1
probe=$(mg ps -q --filter label=com.docker.swarm.service.name=probe | head -1)
# dnsrr: the name resolves to the tasks' own addresses (a VIP would need IPVS, absent here).
answers=$(mg exec "$probe" sh -c 'for ip in $(nslookup ow 2>/dev/null | awk "/^Address: / && !/:53\$/ { print \$2 }"); do
  printf "GET / HTTP/1.0\r\n\r\n" | nc -w 3 "$ip" 8080 | tail -n 1; echo; done' | sort -u | grep . || true)
[ "$(echo "$answers" | wc -l)" = 2 ] || fail "the manager's task reached '$answers' over the overlay, not both workers"
log "   a task on the manager reached both workers' tasks by name: $(echo "$answers" | tr '\n' ' ')"
mg service rm ow probe >/dev/null
mg network rm smoke-net >/dev/null 2>&1 || true

log "3. worker1 stopped and started again"
# A dynamic host port: two tasks may then share a node, so all 3 can move off worker1.
mg service create -d -q --name rs --replicas 3 --hostname '{{.Node.Hostname}}' \
  --publish mode=host,target=8080 beast-examples/busybox:1 sh -c "$httpd" >/dev/null 2>&1
wait_until "3 tasks of rs run" "$timeout_s" count_running rs 3
running rs | grep -q " $prefix-worker1\$" || fail "no task of rs on worker1: $(running rs)"
node_down() { [ "$(mg node inspect -f '{{.Status.State}}' "$prefix-worker1")" = down ]; }
moved() { count_running rs 3 && ! running rs | grep -q " $prefix-worker1\$"; }
t=$(now)
docker stop -t 20 "$prefix-worker1" >/dev/null
stop_s=$(since "$t")
wait_until "the manager marks worker1 Down" "$timeout_s" node_down
down_s=$(since "$t")
wait_until "rs runs 3 tasks off worker1" "$timeout_s" moved
moved_s=$(since "$t")
for task in $(running rs | awk '{ print $1 }'); do
  node=$(mg inspect -f '{{.NodeID}}' "$task")
  addr=$(mg node inspect -f '{{.Status.Addr}}' "$node")
  get "$addr:$(published_port "$task")" >/dev/null || fail "task $task on $addr does not answer"
done
log "   docker stop took ${stop_s}s; worker1 Down after ${down_s}s; its tasks running elsewhere after ${moved_s}s"
before=$(running rs | sort)
t=$(now)
docker start "$prefix-worker1" >/dev/null
node_ready() { [ "$(mg node inspect -f '{{.Status.State}}' "$prefix-worker1")" = ready ]; }
wait_until "worker1 is Ready again" "$timeout_s" node_ready
ready_s=$(since "$t")
# Swarm does not rebalance running tasks; give it time to prove it.
sleep "${SWARM_SMOKE_SETTLE:-10}"
after=$(running rs | sort)
[ "$before" = "$after" ] || fail "running tasks changed after worker1 came back: before '$before', after '$after'"
log "   worker1 Ready again after ${ready_s}s; no running task moved back"
mg service rm rs >/dev/null

log "4. built on the manager, pushed to $registry, run on a worker"
image=$registry/beast-smoke/built:$$
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM beast-examples/busybox:1
RUN mkdir -p /www && echo built-on-the-manager >/www/index.html
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
DOCKERFILE
t=$(now)
out=$(mg build -q -t "$image" "$ctx" 2>&1) || fail "building $image on the manager: $out"
mg push -q "$image" >/dev/null
for w in worker1 worker2; do
  ! docker -H "tcp://$(node_ip "$prefix-$w"):2375" image inspect "$image" >/dev/null 2>&1 ||
    fail "$image is already on $w before the service needs it"
done
mg service create -d -q --name built --constraint node.role==worker \
  --publish mode=host,target=8080 "$image" >/dev/null
wait_until "built runs" "$timeout_s" count_running built 1
built_s=$(since "$t")
read -r task node < <(running built)
case $node in "$prefix-worker1" | "$prefix-worker2") ;; *) fail "built runs on $node, not a worker" ;; esac
body=$(get "$(node_ip "$node"):$(published_port "$task")") || fail "built does not answer on $node"
[ "$body" = built-on-the-manager ] || fail "built answered '$body'"
log "   built, pushed and running on $node (pulled from $registry) after ${built_s}s"
mg service rm built >/dev/null

echo "swarm smoke: ok (3 tasks on 3 nodes ${web_s}s; node down detected ${down_s}s, tasks moved ${moved_s}s;" \
  "node back Ready ${ready_s}s, nothing moved back; registry image on a worker ${built_s}s)"
