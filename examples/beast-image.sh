#!/usr/bin/env bash
# Builds the container image of beast itself on the local engine (no registry, nothing pulled):
# an image FROM scratch holding the beast binary, git (for --git) and exactly the shared
# libraries they load (found with ldd), since no static (musl) Rust target is installed here.
#   examples/beast-image.sh [TAG]            # default tag beast:local; builds the release binary
#   BEAST_PROFILE=debug examples/beast-image.sh   # reuse the debug build (quicker, larger)
#
# Run it (docs/deploy.md says more):
#   docker run -d --name beast \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v "$PWD/challenges:/manifests:ro" -v beast-state:/var/lib/beast \
#     -v /etc/beast/jwt-secret:/run/secrets/beast-jwt:ro -e BEAST_JWT_SECRET_FILE=/run/secrets/beast-jwt \
#     -p 127.0.0.1:5005:5005 --read-only --tmpfs /tmp beast:local
# Inside, beast listens on 0.0.0.0:5005 with authentication on, reads manifests from /manifests,
# keeps its state on the /var/lib/beast volume, and talks to the engine through the mounted socket.
# git works for local and file:// repositories (git runs their upload-pack through /bin/sh, Debian's
# static busybox here) and for https (CA certificates are copied from the build host); there is no
# ssh client in the image, so ssh:// remotes do not work.
# Needs: docker, cargo, ldd, Debian's git (/usr/bin/git and /usr/lib/git-core) and busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-beast:local}
profile=${BEAST_PROFILE:-release}
case $profile in
  release) cargo build --release --locked --quiet --bin beast ;;
  debug) cargo build --locked --quiet --bin beast ;;
  *) echo "error: BEAST_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
bin=target/$profile/beast
git_bin=${GIT_BIN:-/usr/bin/git}
git_core=${GIT_CORE:-/usr/lib/git-core}
busybox=${BUSYBOX:-/bin/busybox}
for f in "$bin" "$git_bin" "$git_core/git-remote-http" "$busybox"; do
  [ -x "$f" ] || { echo "error: $f not found (Debian's git and busybox-static provide them)" >&2; exit 1; }
done
if ldd "$busybox" >/dev/null 2>&1; then
  echo "error: $busybox is not static; install Debian's busybox-static" >&2
  exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root"/{bin,usr/local/bin,usr/bin,usr/lib/git-core,etc/ssl/certs,var/lib/beast,manifests,run/secrets}
mkdir -m 1777 "$root/tmp"

# A file and every library it loads, at the same paths (the loader finds them where ldd did).
with_libs() {
  local file=$1 lib
  for lib in $(ldd "$file" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    [ -e "$root$lib" ] || cp -L --parents "$lib" "$root"
  done
}

install -m 0755 "$bin" "$root/usr/local/bin/beast"
with_libs "$bin"
install -m 0755 "$git_bin" "$root/usr/bin/git"
with_libs "$git_bin"
# What clone and fetch run besides git itself: upload-pack (local and file:// remotes) and the
# http(s) transport.
install -m 0755 "$git_core/git-remote-http" "$root/usr/lib/git-core/git-remote-http"
with_libs "$git_core/git-remote-http"
ln -s git-remote-http "$root/usr/lib/git-core/git-remote-https"
for builtin in git git-upload-pack git-fetch-pack git-index-pack; do
  ln -s ../../bin/git "$root/usr/lib/git-core/$builtin"
done
# Only sh: git runs a local remote's upload-pack as `sh -c "git-upload-pack '<path>'"`.
install -m 0755 "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
if [ -e /etc/ssl/certs/ca-certificates.crt ]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
printf 'root:x:0:0:root:/var/lib/beast:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin \
    HOME=/var/lib/beast \
    BEAST_LISTEN=0.0.0.0:5005 \
    BEAST_STATE_DIR=/var/lib/beast \
    BEAST_MANIFESTS=/manifests \
    BEAST_LOG_FORMAT=json
VOLUME ["/var/lib/beast"]
EXPOSE 5005
ENTRYPOINT ["/usr/local/bin/beast"]
CMD ["run"]
DOCKERFILE

if ! out=$(docker build -q --label "org.opencontainers.image.title=beast" \
  --label "org.opencontainers.image.version=$("$bin" --version | awk '{print $2}')" \
  -t "$tag" "$ctx" 2>&1); then
  printf '%s\n' "$out" >&2
  echo "error: building $tag failed" >&2
  exit 1
fi
# The image runs: beast and git start (every library they need is there).
docker run --rm --network none "$tag" --version >/dev/null
docker run --rm --network none --entrypoint /usr/bin/git "$tag" --version >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1/1e6}'))"
