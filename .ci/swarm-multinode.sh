#!/usr/bin/env bash
# beast on a real three-node swarm (issue 11): three Docker engines as containers on a private
# network (examples/swarm-cluster.sh: a debootstrapped Debian image with Debian's docker.io,
# cached by tag), joined into a swarm, Debian's docker-registry on the manager. beast runs on
# this host and drives the manager (DOCKER_HOST=tcp://MANAGER:2375, --runtime swarm --registry):
#   1. challenges spread over the three nodes, each answering on the node its replica runs on;
#   2. a challenge built from source is pushed to the registry (its service runs the digest) and
#      runs on a worker (spec.placement.constraints: [node.role==worker]);
#   3. worker1 stopped: its replicas move to the other nodes and beast's status says so (node
#      column, a Rescheduled event, every challenge Running again);
#   4. worker1 back: nothing recreated (same tasks, no service updated);
#   5. without --registry, a build-from-source challenge is refused with a clear error.
# The cluster is made for the run and removed on exit, success or failure.
#   .ci/swarm-multinode.sh                 # a few minutes with beast/swarm-node:1 cached
#   SWARM_MN_KEEP=1 .ci/swarm-multinode.sh # leave the cluster up (examples/swarm-cluster.sh down NAME)
# Needs: root, docker, curl, jq; a built beast (cargo build; BEAST_BIN to point elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."

name=${SWARM_MN_NAME:-mn$$}
prefix=beast-swarm-$name
limit=${SWARM_MN_TIMEOUT:-180}
beast=${BEAST_BIN:-target/debug/beast}
instance=mn-$$
work=$(mktemp -d)
pids=()

log() { echo "[swarm-multinode $(date +%T)] $*" >&2; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$status" != 0 ]; then
    for f in "$work"/beast*.log; do
      [ -f "$f" ] && { echo "--- $f (last 40 lines) ---" >&2; tail -n 40 "$f" >&2; }
    done
    [ -n "${manager:-}" ] && { mg node ls >&2 2>&1 || true; mg service ls >&2 2>&1 || true; }
  fi
  if [ -n "${manager:-}" ]; then
    for i in "$instance" "$instance-noreg"; do
      DOCKER_HOST=$manager examples/cleanup-instance.sh "$i" || true
    done
  fi
  if [ -z "${SWARM_MN_KEEP:-}" ]; then
    examples/swarm-cluster.sh down "$name" >/dev/null 2>&1 || true
  else
    echo "kept: examples/swarm-cluster.sh down $name" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Repeats a command until it succeeds; fails the run after $2 seconds.
wait_until() {
  local what=$1 secs=$2 deadline
  shift 2
  deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${secs}s waiting until $what"
    sleep 1
  done
}

[ -x "$beast" ] || cargo build --quiet
examples/swarm-cluster.sh up "$name" >/dev/null
eval "$(examples/swarm-cluster.sh env "$name" | sed 's/^export //')"
manager=$DOCKER_HOST
unset DOCKER_HOST
registry=$SWARM_REGISTRY
mg() { docker -H "$manager" "$@"; }
node_ip() { mg node inspect -f '{{.Status.Addr}}' "$1"; }

# A web page naming the container; the shell exits on SIGTERM, so a stopped node's engine does
# not wait out its shutdown timeout for it.
page='mkdir -p /www && hostname >/www/index.html && httpd -p 8080 -h /www && trap \"exit 0\" TERM && while sleep 1; do :; done'
challenge() { # NAME REPLICAS EXTRA
  cat >"$work/m/$1.yaml" <<EOF
apiVersion: beast/v1
kind: Challenge
metadata:
  name: $1
spec:
  image: beast-examples/busybox:1
  command: [sh, -c, "$page"]
  replicas: $2
  ports:
    - port: 8080
$3
EOF
}
mkdir -p "$work/m/built"
challenge web 2 ""
for i in 1 2 3; do challenge "solo$i" 1 ""; done
cat >"$work/m/bg.yaml" <<EOF
apiVersion: beast/v1
kind: Challenge
metadata:
  name: bg
spec:
  image: beast-examples/busybox:1
  command: [sh, -c, "trap 'exit 0' TERM; while sleep 1; do :; done"]
  replicas: 3
EOF
cat >"$work/m/built/Dockerfile" <<'EOF'
FROM beast-examples/busybox:1
RUN mkdir -p /www && echo built-from-source >/www/index.html
CMD ["sh", "-c", "httpd -p 8080 -h /www && trap 'exit 0' TERM && while sleep 1; do :; done"]
EOF
cat >"$work/m/built/challenge.yaml" <<'EOF'
apiVersion: beast/v1
kind: Challenge
metadata:
  name: built
spec:
  build: {context: .}
  ports:
    - port: 8080
  placement:
    constraints: [node.role==worker]
EOF
challenges="web solo1 solo2 solo3 bg built"

api_port=$((20000 + $$ % 5000))
log "beast --runtime swarm --registry $registry, driving $manager"
DOCKER_HOST=$manager BEAST_LOG=beast=debug,info "$beast" run --runtime swarm --registry "$registry" \
  --manifests "$work/m" --state-dir "$work/state" --instance "$instance" --no-auth \
  --listen "127.0.0.1:$api_port" --resync 5s >"$work/beast.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$api_port/api/v1"
statuses() { curl -fsS --max-time 5 "$api/status/challenges"; }
phase() { statuses | jq -r --arg n "$1" '.items[] | select(.name == $n) | .status.phase'; }
all_running() {
  local s
  s=$(statuses) || return 1
  [ "$(echo "$s" | jq '[.items[] | select(.status.phase == "Running")] | length')" = 6 ]
}
# "CHALLENGE REPLICA NODE ID HOSTPORT" of every running replica.
replicas() {
  statuses | jq -r '.items[] | .name as $n | .status.containers[] | select(.state == "running")
    | "\($n) \(.replica) \(.node // "-") \(.id) \(.ports[0].hostPort // 0)"'
}
wait_until "every challenge Running" "$limit" all_running

log "1. spread over the nodes, each replica answering on its node"
replicas | sort >"$work/before"
cat "$work/before" >&2
nodes_used=$(awk '{ print $3 }' "$work/before" | sort -u | wc -l)
[ "$nodes_used" = 3 ] || fail "the replicas run on $nodes_used node(s), not 3"
while read -r c _ node _ port; do
  [ "$port" = 0 ] && continue
  ip=$(node_ip "$node")
  curl -fsS --max-time 3 "http://$ip:$port/" >/dev/null || fail "$c on $node ($ip:$port) does not answer"
done <"$work/before"

log "2. the built challenge: pushed to the registry, running on a worker"
image=$(mg service inspect "${instance}_built" -f '{{.Spec.TaskTemplate.ContainerSpec.Image}}')
case $image in
  "$registry"/*@sha256:*) ;;
  *) fail "the built service runs $image, not a digest in $registry" ;;
esac
built_node=$(awk '$1 == "built" { print $3 }' "$work/before")
case $built_node in
  "$prefix-worker1" | "$prefix-worker2") ;;
  *) fail "built runs on '$built_node', not a worker" ;;
esac
built_port=$(awk '$1 == "built" { print $5 }' "$work/before")
body=$(curl -fsS --max-time 3 "http://$(node_ip "$built_node"):$built_port/")
[ "$body" = built-from-source ] || fail "built answered '$body'"
log "   $image on $built_node"

log "3. worker1 stopped"
grep -q " $prefix-worker1 " "$work/before" || fail "nothing ran on worker1"
versions() { mg service ls -q --filter "label=beast.instance=$instance" | sort | xargs docker -H "$manager" service inspect -f '{{.Spec.Name}} {{.Version.Index}}'; }
t=$(date +%s)
docker stop -t 20 "$prefix-worker1" >/dev/null
off_worker1() {
  local r
  all_running || return 1
  r=$(replicas) || return 1
  ! echo "$r" | grep -q " $prefix-worker1 "
}
wait_until "every challenge Running off worker1" "$limit" off_worker1
log "   every challenge Running again off worker1 after $(($(date +%s) - t))s"
replicas | sort >"$work/moved"
cat "$work/moved" >&2
moved_events=$(statuses | jq '[.items[].status.events[]? | select(.reason == "Rescheduled")] | length')
[ "$moved_events" -ge 1 ] || fail "no Rescheduled event in beast's status"
statuses | jq -r '.items[].status.events[]? | select(.reason == "Rescheduled") | .message' | head -n 3 >&2
versions >"$work/versions-moved"

log "4. worker1 back: nothing recreated"
docker start "$prefix-worker1" >/dev/null
ready() { [ "$(mg node inspect -f '{{.Status.State}}' "$prefix-worker1")" = ready ]; }
wait_until "worker1 Ready" "$limit" ready
sleep 15
replicas | sort >"$work/back"
diff "$work/moved" "$work/back" >&2 || fail "replicas changed after worker1 came back"
versions >"$work/versions-back"
diff "$work/versions-moved" "$work/versions-back" >&2 || fail "services were updated after worker1 came back"
grep -q 'applying' "$work/beast.log" && grep 'applying' "$work/beast.log" | tail -n 3 >&2
log "   same tasks, no service updated"

log "5. without --registry: a build-from-source challenge is refused"
mkdir -p "$work/noreg"
cp -r "$work/m/built" "$work/noreg/"
DOCKER_HOST=$manager "$beast" run --runtime swarm --manifests "$work/noreg" --state-dir "$work/state-noreg" \
  --instance "$instance-noreg" --no-auth --listen "127.0.0.1:$((api_port + 1))" >"$work/beast-noreg.log" 2>&1 &
pids+=($!)
refused() {
  curl -fsS --max-time 5 "http://127.0.0.1:$((api_port + 1))/api/v1/status/challenges" |
    jq -e '.items[] | select(.name == "built") | .status.conditions[] | select(.type == "Ready" and .status == "False" and .reason == "RegistryRequired") | .message | test("--registry")'
}
wait_until "the built challenge refused for want of --registry" "$limit" refused
[ -z "$(mg service ls -q --filter "label=beast.instance=$instance-noreg")" ] || fail "a service was created without a registry"
curl -fsS "http://127.0.0.1:$((api_port + 1))/api/v1/status/challenges" |
  jq -r '.items[] | select(.name == "built") | .status.conditions[] | select(.type == "Ready") | "   \(.reason): \(.message)"' >&2
log "passed"
