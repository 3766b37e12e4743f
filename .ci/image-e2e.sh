#!/usr/bin/env bash
# End to end with beast's own container image: builds it (examples/beast-image.sh), runs it with
# the examples mounted read-only plus a local git repository holding one more challenge (--git,
# so git inside the image is exercised), its own instance id and state volume, authentication on,
# then checks over the API that every challenge becomes Running and that echo-tcp answers on its
# host port. Removes exactly what it made (beast's container, the challenge containers
# labelled with its instance, its volume and secret), on success and on failure alike.
#   .ci/image-e2e.sh                        # packs the debug binary `cargo test` already built
#   BEAST_PROFILE=release .ci/image-e2e.sh  # the release binary (a long build on a fresh checkout)
# Needs: docker, curl, jq, and the example images (examples/build-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

export BEAST_PROFILE=${BEAST_PROFILE:-debug}
id=image-e2e-$$-$RANDOM
tag=${BEAST_IMAGE:-beast:local}
name=beast-$id
volume=beast-$id-state
deadline=${E2E_DEADLINE:-180}
secret_dir=$(mktemp -d)
repo=$(mktemp -d)

cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then
    echo "--- beast's last log lines ---" >&2
    docker logs --tail 40 "$name" >&2 2>&1 || true
  fi
  docker rm -f "$name" >/dev/null 2>&1 || true
  # Only what this run's beast made: its containers, networks and egress rules.
  examples/cleanup-instance.sh "$id"
  docker volume rm "$volume" >/dev/null 2>&1 || true
  rm -rf "$secret_dir" "$repo"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

examples/beast-image.sh "$tag"

(umask 077; head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret_dir/jwt-secret")
chmod 0444 "$secret_dir/jwt-secret"
docker volume create "$volume" >/dev/null
# The GitOps source: one challenge, its host port allocated by beast.
git init -q -b main "$repo"
mkdir "$repo/git-echo"
sed -e 's/^  name: echo-tcp/  name: git-echo/' -e '/hostPort:/d' examples/echo-tcp/challenge.yaml >"$repo/git-echo/challenge.yaml"
git -C "$repo" add -A
git -C "$repo" -c user.email=ci@beast.invalid -c user.name=ci commit -qm "one challenge"

secret=(-v "$secret_dir/jwt-secret:/run/secrets/beast-jwt:ro" -e BEAST_JWT_SECRET_FILE=/run/secrets/beast-jwt)

# Host networking: beast probes challenges on their own bridge networks, which a container on
# Docker's default bridge cannot reach (docs/deploy.md).
api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
docker run -d --name "$name" --network host \
  -v /var/run/docker.sock:/var/run/docker.sock \
  -v "$PWD/examples:/manifests:ro" \
  -v "$volume:/var/lib/beast" \
  -v "$repo:/repo:ro" \
  "${secret[@]}" \
  -e BEAST_INSTANCE="$id" \
  -e BEAST_LISTEN="127.0.0.1:$api_port" \
  --read-only --tmpfs /tmp \
  "$tag" run --git file:///repo --git-branch main >/dev/null
api=http://127.0.0.1:$api_port
echo "beast ($tag) as instance $id, API on $api"

token=$(docker run --rm --network none "${secret[@]}" "$tag" token --role admin --subject image-e2e --ttl 1h)
auth=(-H "Authorization: Bearer $token")

wait_for() { # description, command...
  local what=$1 start=$SECONDS
  shift
  until "$@"; do
    if ((SECONDS - start > deadline)); then
      echo "error: $what not reached within ${deadline}s" >&2
      return 1
    fi
    sleep 1
  done
  echo "ok: $what ($((SECONDS - start))s)"
}

ready() { curl -fsS "$api/readyz" >/dev/null 2>&1; }
wait_for "/readyz" ready

# Authentication is on: no token, no status.
code=$(curl -s -o /dev/null -w '%{http_code}' "$api/api/v1/status/challenges")
[ "$code" = 401 ] || { echo "error: unauthenticated status request answered $code, not 401" >&2; exit 1; }

expected=$(for f in examples/*/challenge.yaml "$repo"/*/challenge.yaml; do sed -n 's/^  name: *//p' "$f" | head -n1; done | sort)
all_running() {
  local body
  body=$(curl -fsS "${auth[@]}" "$api/api/v1/status/challenges") || return 1
  status_line=$(jq -r '[.items[] | "\(.name)=\(.status.phase)"] | sort | join(" ")' <<<"$body")
  local running
  running=$(jq -r '.items[] | select(.status.phase == "Running") | .name' <<<"$body" | sort)
  [ "$running" = "$expected" ]
}
status_line=
if ! wait_for "every challenge Running ($(echo $expected))" all_running; then
  echo "last status: $status_line" >&2
  exit 1
fi

# echo-tcp, published by the engine on the host's loopback, greets and echoes.
echo_port=$(curl -fsS "${auth[@]}" "$api/api/v1/status/challenges/echo-tcp" |
  jq -r '.status.containers[0].ports[] | select(.port == 1337) | .hostPort')
echo_answers() {
  local reply
  reply=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$echo_port; printf 'ping-image-e2e\n' >&3; timeout 2 cat <&3" 2>/dev/null || true)
  grep -q 'ping-image-e2e' <<<"$reply"
}
wait_for "echo-tcp answers on 127.0.0.1:$echo_port" echo_answers

# The containers are this instance's, and beast's own container is not among them.
own=$(docker ps -q --filter "label=beast.instance=$id" | wc -l)
[ "$own" -ge "$(wc -w <<<"$expected")" ] || { echo "error: only $own containers labelled $id" >&2; exit 1; }

docker stop -t 10 "$name" >/dev/null
echo "image-e2e: 1 passed, 0 failed"
