#!/usr/bin/env bash
# A three-node Docker Swarm for tests, made of privileged containers on this host: NAME-manager,
# NAME-worker1 and NAME-worker2 (image beast/swarm-node:1, examples/swarm-node-image.sh), each with
# its own dockerd, on a private bridge network this script creates. The manager also serves
# Debian's docker-registry on :5000, which every node trusts as an insecure registry, and the
# test images (beast-examples/*, examples/build-images.sh) are loaded into every node and pushed
# to that registry. Nothing is pulled from anywhere: the network is internal (no route out).
#   examples/swarm-cluster.sh up NAME       # make it (about a minute with the images cached)
#   eval "$(examples/swarm-cluster.sh env NAME)"   # DOCKER_HOST=tcp://MANAGER:2375, SWARM_REGISTRY
#   examples/swarm-cluster.sh status NAME   # nodes and services as the manager sees them
#   examples/swarm-cluster.sh down NAME     # remove exactly what `up NAME` made, even half made
# Everything is named beast-swarm-NAME[-node[-data]] and labelled beast-swarm.cluster=NAME; `down`
# removes only objects carrying both the name and the label.
# Settings: SWARM_SUBNET=10.199.7.0/24 (default: the first free 10.199.x.0/24), SWARM_TIMEOUT=120
# (seconds for each wait), SWARM_SEED_IMAGES="img:tag ..." (default: every beast-examples/* image),
# SWARM_HEARTBEAT=5s (Docker's default; 1s detects a lost node sooner, for quicker tests).
# Needs: root (privileged containers), docker, curl. docs/scaling-out.md says what works on it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

image=${SWARM_NODE_IMAGE:-beast/swarm-node:1}
timeout_s=${SWARM_TIMEOUT:-120}
# Overlay networks of the nested swarm come from here: clear of the nodes' 10.199.x.0/24 and of
# beast's own pool (10.213.0.0/16).
overlay_pool=${SWARM_OVERLAY_POOL:-10.200.0.0/16}
# How often workers report to the manager; a node is Down after a few missed beats.
heartbeat=${SWARM_HEARTBEAT:-5s}
label=beast-swarm.cluster
nodes=(manager worker1 worker2)
node_privileges=(--cap-add ALL --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --security-opt systempaths=unconfined --device-cgroup-rule 'a *:* rwm')
# The capabilities the host engine's own bounding set lacks cannot be granted: drop them by name
# (capability numbers 0-40 in the kernel's order).
cap_names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
  NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
  SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
  AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
  PERFMON BPF CHECKPOINT_RESTORE)
engine_pid=$(pgrep -o -x dockerd || echo self)
engine_caps=$((16#$(awk '/^CapBnd/ { print $2 }' "/proc/$engine_pid/status")))
for i in "${!cap_names[@]}"; do
  (((engine_caps >> i) & 1)) || node_privileges+=(--cap-drop "${cap_names[$i]}")
done
export DOCKER_BUILDKIT=0

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() {
  echo "error: $*" >&2
  exit 1
}
log() { echo "[swarm-cluster $(date +%T)] $*" >&2; }

[ $# = 2 ] || usage
cmd=$1
name=$2
[[ $name =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] || die "NAME must be lower-case letters, digits and dashes (at most 31), not '$name'"
prefix=beast-swarm-$name
net=$prefix

container_of() { echo "$prefix-$1"; }
volume_of() { echo "$prefix-$1-data"; }
# The object's label, empty when it does not exist.
label_of() { docker "$1" inspect -f "{{index .Labels \"$label\"}}" "$2" 2>/dev/null || true; }
container_label() { docker container inspect -f "{{index .Config.Labels \"$label\"}}" "$1" 2>/dev/null || true; }

# The node's address on the cluster network (static: .2 manager, .3 and .4 workers).
node_ip() {
  local subnet base
  subnet=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$net" 2>/dev/null) ||
    die "no cluster $name (network $net not found); run: $0 up $name"
  base=${subnet%.*}
  case $1 in manager) echo "$base.2" ;; worker1) echo "$base.3" ;; worker2) echo "$base.4" ;; esac
}
# The docker CLI against one node's engine, over its TCP socket on the private network.
on() {
  local node=$1
  shift
  docker -H "tcp://$(node_ip "$node"):2375" "$@"
}
# Repeats a command until it succeeds or the deadline passes.
wait_for() {
  local what=$1 deadline=$(($(date +%s) + timeout_s))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "timed out after ${timeout_s}s waiting for $what"
    sleep 1
  done
}

create_network() {
  if [ -n "$(label_of network "$net")" ]; then
    log "network $net exists"
    return
  fi
  local candidates out
  if [ -n "${SWARM_SUBNET:-}" ]; then
    candidates=$SWARM_SUBNET
  else
    # Start at a spot derived from the name so two clusters seldom try the same subnet first.
    local first=$(($(printf '%s' "$name" | cksum | cut -d' ' -f1) % 256)) i
    candidates=$(for i in $(seq 0 255); do echo "10.199.$(((first + i) % 256)).0/24"; done)
  fi
  for subnet in $candidates; do
    # Internal: the nested engines have no route out, so nothing can be pulled from outside by
    # mistake; the host still reaches the nodes through the bridge.
    if out=$(docker network create --driver bridge --internal --subnet "$subnet" \
      --label "$label=$name" "$net" 2>&1); then
      log "network $net on $subnet"
      return
    fi
    case $out in
      *overlap*) continue ;;
      *) die "creating network $net: $out" ;;
    esac
  done
  die "no free /24 for network $net (tried: $(echo "$candidates" | head -3 | tr '\n' ' ')...)"
}

start_node() {
  local node=$1 c ip mgr
  c=$(container_of "$node")
  ip=$(node_ip "$node")
  mgr=$(node_ip manager)
  if [ -n "$(container_label "$c")" ]; then
    docker start "$c" >/dev/null || die "$c exists but does not start; remove the cluster: $0 down $name"
    log "$c ($ip) exists, started"
    return
  fi
  docker volume create --label "$label=$name" "$(volume_of "$node")" >/dev/null
  local extra=()
  [ "$node" = manager ] && extra=(-e SWARM_NODE_REGISTRY=1)
  # What the nested engine needs (mounts, cgroups, iptables, sysctls): every capability the host
  # engine can grant, no seccomp/AppArmor profile, writable /proc/sys, all devices. Not
  # --privileged: Docker 20.10 then asks for every capability the kernel knows, and where the host
  # engine's bounding set lacks one (CAP_SYS_RESOURCE on this machine) runc fails with "unable
  # to apply caps". /var/lib/docker on a volume (ext4 here) so the nested engine can use
  # overlay2; /run as tmpfs so no stale pid file or socket survives a restart of the node.
  docker run -d --name "$c" --hostname "$c" "${node_privileges[@]}" \
    --network "$net" --ip "$ip" --label "$label=$name" \
    -v "$(volume_of "$node"):/var/lib/docker" --tmpfs /run --tmpfs /tmp \
    "${extra[@]}" "$image" --insecure-registry "$mgr:5000" >/dev/null
  log "$c started on $ip"
}

engine_up() { on "$1" version --format '{{.Server.Version}}'; }
swarm_state() { on "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }
ready_nodes() { on manager node ls --format '{{.Status}}' 2>/dev/null | grep -c '^Ready$' || true; }

up() {
  local start=$(date +%s) mgr token node images
  command -v curl >/dev/null || die "curl is needed"
  "$here/swarm-node-image.sh" >&2
  create_network
  for node in "${nodes[@]}"; do start_node "$node"; done
  mgr=$(node_ip manager)
  for node in "${nodes[@]}"; do wait_for "the engine of $(container_of "$node")" engine_up "$node"; done
  log "engines answer"

  if [ "$(swarm_state manager)" != active ]; then
    on manager swarm init --advertise-addr "$mgr" --listen-addr "$mgr:2377" \
      --default-addr-pool "$overlay_pool" --default-addr-pool-mask-length 24 \
      --dispatcher-heartbeat "$heartbeat" >/dev/null
    log "swarm initialised on $mgr"
  fi
  token=$(on manager swarm join-token -q worker)
  for node in worker1 worker2; do
    [ "$(swarm_state "$node")" = active ] && continue
    on "$node" swarm join --token "$token" --advertise-addr "$(node_ip "$node")" "$mgr:2377" >/dev/null
    log "$node joined"
  done
  wait_for "3 Ready nodes" test_ready 3
  wait_for "the registry on $mgr:5000" curl -fsS --max-time 3 "http://$mgr:5000/v2/"
  log "3 nodes Ready, registry answers"

  # The test images: loaded into every node (so a service naming beast-examples/busybox:1 runs
  # anywhere) and pushed to the registry as $mgr:5000/beast-examples/... (so pulls work too).
  if [ -n "${SWARM_SEED_IMAGES:-}" ]; then
    images=$SWARM_SEED_IMAGES
  else
    docker image inspect beast-examples/busybox:1 >/dev/null 2>&1 || "$here/build-images.sh" >&2
    images=$(docker images --format '{{.Repository}}:{{.Tag}}' --filter 'reference=beast-examples/*' | sort)
  fi
  [ -n "$images" ] || die "no images to seed"
  for node in "${nodes[@]}"; do
    # shellcheck disable=SC2086
    docker save $images | on "$node" load -q >/dev/null
  done
  for img in $images; do
    on manager tag "$img" "$mgr:5000/$img"
    on manager push -q "$mgr:5000/$img" >/dev/null || die "pushing $mgr:5000/$img to the registry"
  done
  log "seeded $(echo "$images" | wc -w) images into each node and $mgr:5000"
  log "up in $(($(date +%s) - start))s"
  env_of
}
test_ready() { [ "$(ready_nodes)" -ge "$1" ]; }

env_of() {
  local mgr
  mgr=$(node_ip manager)
  echo "export DOCKER_HOST=tcp://$mgr:2375"
  echo "export SWARM_REGISTRY=$mgr:5000"
  echo "export SWARM_NODES='$mgr $(node_ip worker1) $(node_ip worker2)'"
}

status() {
  on manager node ls
  on manager service ls
}

down() {
  local node c v stopped=()
  # Stop first, all at once: each nested engine then stops its own containers, so nothing of
  # theirs (cgroups, mounts) outlives the node.
  for node in "${nodes[@]}"; do
    c=$(container_of "$node")
    [ "$(container_label "$c")" = "$name" ] && stopped+=("$c")
  done
  if [ ${#stopped[@]} -gt 0 ]; then
    docker stop -t 20 "${stopped[@]}" >/dev/null 2>&1 || true
    docker rm -f "${stopped[@]}" >/dev/null
    log "removed ${stopped[*]}"
  fi
  for node in "${nodes[@]}"; do
    v=$(volume_of "$node")
    if [ "$(label_of volume "$v")" = "$name" ]; then
      docker volume rm "$v" >/dev/null
      log "removed volume $v"
    fi
  done
  if [ "$(label_of network "$net")" = "$name" ]; then
    docker network rm "$net" >/dev/null
    log "removed network $net"
  fi
}

case $cmd in
  up) up ;;
  env) env_of ;;
  status) status ;;
  down) down ;;
  *) usage ;;
esac
