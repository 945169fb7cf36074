#!/usr/bin/env bash
# Build the polchain image once and tag it (compose, `docker stack deploy` and the e2e scripts use it).
#
#   scripts/docker-build-image.sh [TAG]          # default polchain:latest
#
# Torch for the image (see Dockerfile): TORCH_SPEC / TORCH_INDEX_URL when set. If TORCH_SPEC is unset and
# ./wheels/ (or pip's find-links folder on this machine) holds a CPython 3.11 x86-64 torch wheel, that
# wheel is linked into ./wheels/ and used (TORCH_SPEC=torch==<its version>); otherwise "torch" from PyPI.
# Prints the torch build the image got. Multi-host swarm: push TAG to a registry the hosts reach
# (docs/testnet.md, "Several hosts").
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-${POLCHAIN_IMAGE:-polchain:latest}}

mkdir -p wheels
[ -e wheels/.gitignore ] || printf '*\n' > wheels/.gitignore   # the folder ignores itself in git
if [ -z "${TORCH_SPEC:-}" ]; then
  whl=$(ls wheels/torch-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    for d in $(pip config get global.find-links 2>/dev/null || true) ${PIP_FIND_LINKS:-}; do
      cand=$(ls "$d"/torch-*-cp311-*linux*x86_64.whl 2>/dev/null | sort -V | tail -n1 || true)
      if [ -n "$cand" ]; then
        ln -f "$cand" wheels/ 2>/dev/null || cp "$cand" wheels/
        whl=wheels/$(basename "$cand"); break
      fi
    done
  fi
  if [ -n "$whl" ]; then
    TORCH_SPEC="torch==$(basename "$whl" | cut -d- -f2 | cut -d+ -f1)"
    echo "[docker-build-image] local wheel $whl (TORCH_SPEC=$TORCH_SPEC)" >&2
  fi
fi
TORCH_SPEC=${TORCH_SPEC:-torch}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
echo "[docker-build-image] docker build -t $TAG (TORCH_SPEC=$TORCH_SPEC TORCH_INDEX_URL=${TORCH_INDEX_URL:-none})" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! docker build -t "$TAG" --build-arg TORCH_SPEC="$TORCH_SPEC" --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" . \
     >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "[docker-build-image] FAIL: docker build (last 30 lines above)" >&2
  exit 1
fi
sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(torch: |torch installed: |polchain ok)' \
  | sed 's/^/[docker-build-image] /' >&2 || true
echo "[docker-build-image] built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)" >&2
