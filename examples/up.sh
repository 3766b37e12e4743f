#!/usr/bin/env bash
# Brings up the example challenges: builds their images, builds beast, and runs it in the
# foreground on the examples directory (Ctrl-C stops beast; the challenges keep running).
#   examples/up.sh [extra beast run flags]
# The API needs a JWT secret: one is generated once into .beast/jwt-secret, and an admin token
# is written to .beast/admin-token for curl and the client verbs.
set -euo pipefail
cd "$(dirname "$0")/.."
examples/build-images.sh
cargo build --release --quiet
mkdir -p .beast
if [ ! -s .beast/jwt-secret ]; then
  (umask 077; head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' > .beast/jwt-secret)
fi
export BEAST_JWT_SECRET_FILE=.beast/jwt-secret
target/release/beast token --role admin --subject examples --ttl 30d > .beast/admin-token
cat <<MSG
beast API on http://127.0.0.1:5005 (admin token in .beast/admin-token). Try:
  export BEAST_TOKEN=\$(cat .beast/admin-token)
  target/release/beast get
  curl -s -H "Authorization: Bearer \$BEAST_TOKEN" 127.0.0.1:5005/api/v1/status/challenges
MSG
exec target/release/beast run --manifests examples --state-dir .beast "$@"
