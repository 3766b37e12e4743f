#!/usr/bin/env bash
# Builds, on the local engine, every image the example challenges and the tests use.
# There is no registry here: images start FROM scratch plus Debian's static busybox.
#   examples/build-images.sh            # build (skips nothing; Docker's cache keeps it fast)
# Needs: docker, and /bin/busybox from Debian's busybox-static (installed here when missing and root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

busybox=${BUSYBOX:-/bin/busybox}
# ldd fails on a static binary; a dynamic busybox would not run in a scratch image.
is_static() { [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1; }
if ! is_static "$busybox" && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing busybox-static" >&2
  apt-get install -y -qq busybox-static >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null; }
fi
if ! is_static "$busybox"; then
  echo "error: $busybox is not a static busybox; install Debian's busybox-static" >&2
  exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$busybox" "$ctx/busybox"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp", "/etc", "/www"]
RUN ["/bin/busybox", "--install", "-s"]
RUN echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'nobody:x:65534:65534:nobody:/:/bin/false' >> /etc/passwd \
 && echo 'root:x:0:' > /etc/group && echo 'nogroup:x:65534:' >> /etc/group && chmod 1777 /tmp
CMD ["sh"]
DOCKERFILE
# Quiet on success (the legacy builder prints a deprecation banner); everything on failure.
build() {
  local tag=$1 dir=$2 out
  if ! out=$(docker build -q -t "$tag" "$dir" 2>&1); then
    printf '%s\n' "$out" >&2
    echo "error: building $tag from $dir failed" >&2
    exit 1
  fi
  echo "built $tag"
}

build beast-examples/busybox:1 "$ctx"

for dir in "$here"/*/image; do
  name=$(basename "$(dirname "$dir")")
  build "beast-examples/$name:1" "$dir"
done
