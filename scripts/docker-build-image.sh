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
echo "[docker-build-image] about 5 minutes the first time (torch and the dependencies are downloaded), well under" \
     "one with a warm build cache; each build step is named below as it starts" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# the whole output goes to the log (its tail is shown on failure); the step lines also to stderr as they come:
# BuildKit's plain progress "#7 [build 3/6] RUN ..." and the legacy builder's "Step 3/12 : RUN ..."
set +e
BUILDKIT_PROGRESS=plain docker build -t "$TAG" --build-arg TORCH_SPEC="$TORCH_SPEC" \
  --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" . 2>&1 | tee "$log" \
  | { grep --line-buffered -E '^(#[0-9]+ \[[^]]+\] |Step [0-9]+/[0-9]+ : )' \
      | sed -u -E 's/^(.{0,150}).*/[docker-build-image]   \1/' >&2 || true; }
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
  tail -n 30 "$log" >&2
  echo "[docker-build-image] FAIL: docker build (last 30 lines above)" >&2
  exit 1
fi
sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(torch: |torch installed: |polchain ok)' \
  | sed 's/^/[docker-build-image] /' >&2 || true
echo "[docker-build-image] built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)" >&2
