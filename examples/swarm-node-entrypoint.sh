#!/bin/bash
# The start script of a test Swarm node (copied into beast/swarm-node:1 by swarm-node-image.sh as
# /usr/local/bin/swarm-node; runs under tini). It runs on every container start, so `docker start`
# of a stopped node brings its engine back, and with it the node's swarm membership.
#   SWARM_NODE_REGISTRY=1   also serve Debian's docker-registry on :5000 (the manager)
#   SWARM_NODE_STORAGE=X    the engine's storage driver; default overlay2 when /var/lib/docker is
#                           a volume on a real filesystem, vfs when it is on overlay or FUSE
#   SWARM_NODE_KEEP_RESOLV=1  keep the resolv.conf Docker wrote (see below)
#   arguments               passed on to dockerd (e.g. --insecure-registry 10.199.0.2:5000)
set -eu

# Left over by an engine that was killed rather than stopped: dockerd and containerd refuse to
# start while their pid files name a process (after a restart, possibly an unrelated one).
rm -f /run/docker.pid /run/docker/containerd/containerd.pid /run/containerd/containerd.pid

# Without --privileged (swarm-cluster.sh cannot use it where the host engine lacks a capability,
# see there), /sys and the cgroup hierarchies come read-only; the container has CAP_SYS_ADMIN and
# no seccomp or AppArmor profile, so it makes them writable for its own engine. The cgroup
# mounts are the node's own subtree: nested containers stay under the node's cgroup.
if grep -q ' /sys sysfs ro[, ]' /proc/mounts; then
  mount -o remount,rw /sys
fi
awk '$3 == "cgroup" && $4 ~ /^ro[,]/ { print $2 }' /proc/mounts | while read -r m; do
  mount -o remount,rw,bind "$m"
done

mkdir -p /var/lib/docker
storage=${SWARM_NODE_STORAGE:-}
if [ -z "$storage" ]; then
  case $(stat -f -c %T /var/lib/docker) in
    overlayfs | fuse* | tmpfs) storage=vfs ;;
    *) storage=overlay2 ;;
  esac
fi

# The node's network is internal: no name resolves outside it. Docker's embedded DNS lets such a
# lookup time out (20 s), and the engine looks up registry-1.docker.io for every image named
# without a registry (on `service create` and again on each node before a task starts). A
# nameserver nobody listens on fails those lookups at once. Nested containers get 8.8.8.8
# instead (the engine drops localhost servers), unreachable at once too.
if [ "${SWARM_NODE_KEEP_RESOLV:-}" != 1 ]; then
  echo 'nameserver 127.0.0.1' >/etc/resolv.conf
fi

if [ "${SWARM_NODE_REGISTRY:-}" = 1 ]; then
  mkdir -p /var/lib/docker-registry
  docker-registry serve /etc/docker/registry/beast.yml >/var/log/docker-registry.log 2>&1 &
fi

echo "swarm-node: dockerd with storage driver $storage, extra arguments: $*"
# tcp://0.0.0.0:2375 without TLS: the cluster's network is private to this host, and the tests
# drive the manager from the host. --tls=false says so; without it dockerd 20.10 waits 15 s.
exec dockerd \
  --host unix:///run/docker.sock \
  --host tcp://0.0.0.0:2375 --tls=false \
  --storage-driver "$storage" \
  "$@"
