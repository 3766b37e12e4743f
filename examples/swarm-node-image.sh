#!/usr/bin/env bash
# Builds the image of one test Swarm node, beast/swarm-node:1: a debootstrapped Debian bookworm
# (minbase) with Debian's docker.io (the node's own engine), docker-registry (run on the manager),
# iptables and iproute2, imported with `docker import`. Nothing is pulled from a registry; the
# packages come from the Debian mirror (deb.debian.org, or SWARM_NODE_MIRROR).
# examples/swarm-cluster.sh runs three of these as a multi-node swarm (docs/scaling-out.md).
#   examples/swarm-node-image.sh            # builds unless the tag already exists (cached by tag)
#   SWARM_NODE_REBUILD=1 examples/swarm-node-image.sh   # builds anew
#   SWARM_NODE_IMAGE=other/tag:2 examples/swarm-node-image.sh
# Two images: beast/swarm-node-rootfs:1 (the debootstrapped root, the slow part) and on top of it
# beast/swarm-node:1 (start script and registry configuration, rebuilt in seconds when they change).
# Needs: root, docker, debootstrap (installed here with apt-get when missing). About 2-4 minutes
# uncached, most of it downloading and unpacking ~120 MB of packages.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

tag=${SWARM_NODE_IMAGE:-beast/swarm-node:1}
# The debootstrapped root alone: the slow part, cached by its own tag.
rootfs_tag=${SWARM_NODE_ROOTFS_IMAGE:-beast/swarm-node-rootfs:1}
suite=${SWARM_NODE_SUITE:-bookworm}
mirror=${SWARM_NODE_MIRROR:-http://deb.debian.org/debian}
packages=docker.io,docker-registry,iptables,iproute2,ca-certificates,procps,busybox-static,tini

# The thin layer on top (start script, registry configuration) is labelled with a hash of its
# inputs, so an edited start script rebuilds that layer (seconds) without a new debootstrap.
layer_hash=$(cat "$here/swarm-node-entrypoint.sh" "$here/swarm-node-registry.conf" | sha256sum | cut -c1-16)
if [ -z "${SWARM_NODE_REBUILD:-}" ] &&
  [ "$(docker image inspect -f '{{index .Config.Labels "beast.swarm-node.layer"}}' "$tag" 2>/dev/null)" = "$layer_hash" ]; then
  echo "$tag exists (cached by tag; SWARM_NODE_REBUILD=1 builds anew)"
  exit 0
fi

start=$(date +%s)
work=$(mktemp -d /var/tmp/beast-swarm-node.XXXXXX)
root=$work/rootfs
cleanup() {
  # A failed build may leave /proc mounted in the root; never rm -rf through a mount.
  if mountpoint -q "$root/proc" 2>/dev/null; then umount -l "$root/proc" || true; fi
  if ! grep -q " $work/" /proc/mounts; then rm -rf "$work"; else echo "warning: $work still has mounts; left in place" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${SWARM_NODE_REBUILD:-}" ] || ! docker image inspect "$rootfs_tag" >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: building $rootfs_tag needs root (debootstrap and chroot)" >&2
    exit 1
  fi
  if ! command -v debootstrap >/dev/null; then
    echo "installing debootstrap" >&2
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq debootstrap >/dev/null
  fi
  echo "debootstrap $suite (minbase + $packages) into $root" >&2
  if ! timeout 1200 debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    echo "error: debootstrap failed" >&2
    exit 1
  fi
  # Smaller: documentation, apt lists and caches are not needed at run time.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root/debootstrap"
  # The engine's state belongs on the volume swarm-cluster.sh mounts, not in the image.
  rm -rf "$root"/var/lib/docker/* "$root"/var/lib/containerd/*
  : >"$root/etc/machine-id"
  echo "importing $rootfs_tag" >&2
  tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$rootfs_tag" >/dev/null
  rm -rf "$root"
fi

# The start script runs under tini, which reaps and forwards signals to the whole process group
# (dockerd and the registry). It runs again on every `docker start`, so a stopped node comes back
# with its engine and, on the manager, the registry.
mkdir -p "$work/ctx"
cp "$here/swarm-node-entrypoint.sh" "$work/ctx/swarm-node"
cp "$here/swarm-node-registry.conf" "$work/ctx/registry.yml"
cat >"$work/ctx/Dockerfile" <<DOCKERFILE
FROM $rootfs_tag
COPY swarm-node /usr/local/bin/swarm-node
COPY registry.yml /etc/docker/registry/beast.yml
LABEL beast.swarm-node.layer=$layer_hash
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/usr/local/bin/swarm-node"]
CMD []
DOCKERFILE
if ! out=$(docker build -q -t "$tag" "$work/ctx" 2>&1); then
  printf '%s\n' "$out" >&2
  echo "error: building $tag failed" >&2
  exit 1
fi
echo "built $tag in $(($(date +%s) - start))s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1/1e6}'))"
