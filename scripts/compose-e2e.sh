#!/usr/bin/env bash
# End-to-end check of the Docker testnet: build the image, start docker-compose.yml (3 nodes, 2 miners),
# wait until every node shares a tip at height >= E2E_HEIGHT, query the REST API (status, blocks,
# model, tips, peers), then bring the stack down and delete its volumes (also on failure or Ctrl-C).
#
#   scripts/compose-e2e.sh
#
# Works with `docker compose` (v2) or `docker-compose` (v1), whichever exists. Environment:
#   E2E_HEIGHT=5           height all nodes must share
#   E2E_TIMEOUT=300        seconds to wait for it (after the containers started)
#   E2E_BASE_PORT=18000    host ports BASE..BASE+2 (kept off 8000-8002 so a running testnet is not disturbed)
#   COMPOSE_PROJECT_NAME=polchain-e2e   (its containers and volumes are the ones removed)
#   POLCHAIN_PRESET=tiny   POLCHAIN_IMAGE=polchain:e2e
#   TORCH_SPEC, TORCH_INDEX_URL   torch for the image: see scripts/docker-build-image.sh (a local torch
#                          wheel in ./wheels/ or pip's find-links folder is used when TORCH_SPEC is unset)
#   E2E_KEEP=1             leave the stack running (no `down -v`) for inspection
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$(date +%s)

log() { printf '[compose-e2e %4ss] %s\n' "$(( $(date +%s) - t_start ))" "$*"; }
die() { log "FAIL: $*"; exit 1; }

# --- compose client ---------------------------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  die "neither 'docker compose' nor 'docker-compose' found"
fi
docker info >/dev/null 2>&1 || die "no Docker engine answering (docker info failed)"

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-polchain-e2e}
export POLCHAIN_PRESET=${POLCHAIN_PRESET:-tiny}
export POLCHAIN_IMAGE=${POLCHAIN_IMAGE:-polchain:e2e}
BASE=${E2E_BASE_PORT:-18000}
export NODE0_PORT=$BASE NODE1_PORT=$((BASE + 1)) NODE2_PORT=$((BASE + 2))
HEIGHT=${E2E_HEIGHT:-5}
TIMEOUT=${E2E_TIMEOUT:-300}
PY=$(command -v python3 || command -v python) || die "python3 is needed on the host for JSON checks"
log "client: ${COMPOSE[*]}; project $COMPOSE_PROJECT_NAME; preset $POLCHAIN_PRESET; ports $BASE-$((BASE + 2))"

# --- cleanup on exit ----------------------------------------------------------------------------------
ok=0
cleanup() {
  rc=$?
  trap - EXIT INT TERM
  if [ "$ok" != 1 ]; then
    log "logs (last 25 lines per service):"
    "${COMPOSE[@]}" logs --no-color --tail=25 2>&1 | sed 's/^/    /' || true
  fi
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "E2E_KEEP=1: stack left running; remove it with: ${COMPOSE[*]} -p $COMPOSE_PROJECT_NAME down -v"
  else
    log "down -v"
    "${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || "${COMPOSE[@]}" down -v || true
  fi
  log "$([ "$ok" = 1 ] && echo PASS || echo FAIL) in $(( $(date +%s) - t_start ))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build and start ----------------------------------------------------------------------------------
t0=$(date +%s)
scripts/docker-build-image.sh "$POLCHAIN_IMAGE" || die "image build"
log "image built in $(( $(date +%s) - t0 ))s"
"${COMPOSE[@]}" down -v --remove-orphans >/dev/null 2>&1 || true   # leftovers of an interrupted run
t0=$(date +%s)
"${COMPOSE[@]}" up -d --no-build
log "stack up in $(( $(date +%s) - t0 ))s; waiting for a shared tip at height >= $HEIGHT (timeout ${TIMEOUT}s)"

# --- wait for a shared tip ----------------------------------------------------------------------------
URLS="http://127.0.0.1:$NODE0_PORT http://127.0.0.1:$NODE1_PORT http://127.0.0.1:$NODE2_PORT"
poll() {  # prints "OK <height> <tip>" when all nodes share a tip at height >= HEIGHT, else a progress line
  "$PY" scripts/shared_tip.py "$HEIGHT" $URLS
}
deadline=$(( $(date +%s) + TIMEOUT ))
t0=$(date +%s)
last=""
while :; do
  out=$(poll)
  case "$out" in
    OK*) break ;;
  esac
  [ "$out" != "$last" ] && log "$out"; last=$out
  for svc in node0 node1 node2; do   # a node that exited will not come back in time: fail early
    cid=$("${COMPOSE[@]}" ps -q "$svc" 2>/dev/null || true)
    if [ -n "$cid" ] && [ "$(docker inspect -f '{{.State.Restarting}}{{.State.Running}}' "$cid")" != falsetrue ] \
       && [ "$(docker inspect -f '{{.RestartCount}}' "$cid")" -ge 2 ]; then
      die "$svc keeps exiting (restarted $(docker inspect -f '{{.RestartCount}}' "$cid") times)"
    fi
  done
  [ "$(date +%s)" -lt "$deadline" ] || die "no shared tip at height >= $HEIGHT after ${TIMEOUT}s ($out)"
  sleep 2
done
read -r _ tip_h tip_hash <<<"$out"
log "all 3 nodes share tip ${tip_hash:0:16} at height $tip_h ($(( $(date +%s) - t0 ))s after up)"

# --- REST API -------------------------------------------------------------------------------------
api_check() {
  "$PY" - "$@" <<'PYEOF'
import json, sys, urllib.request
base, node2, tip_h, tip_hash = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def get(url, raw=False):
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
        return (body, dict(r.headers)) if raw else json.loads(body)
def check(cond, what):
    if not cond:
        sys.exit(f"API check failed: {what}")
    print(f"    ok  {what}")

st = get(base + "/status")
check(st["height"] >= tip_h and st["preset"] and st["mining"]["enabled"], f"GET /status: height {st['height']}, "
      f"preset {st['preset']}, tip accuracy {st['tip_accuracy']['correct']}/{st['tip_accuracy']['of']}, "
      f"{st['mining']['attempts_per_second']} attempts/s")
check(get(base + "/health")["status"] == "ok", "GET /health: ok")
bl = get(base + "/blocks?start=0&limit=100")["blocks"]
hs = [b["height"] for b in bl]
check(hs[: tip_h + 1] == list(range(tip_h + 1)), f"GET /blocks: heights 0..{hs[-1]} in order")
check(all(b["header"]["parent"] == a["hash"] for a, b in zip(bl, bl[1:])), "GET /blocks: parent links")
b = get(f"{base}/blocks/{tip_h}")
check(b["height"] == tip_h and b["in_best_chain"], f"GET /blocks/{tip_h}: hash {b['hash'][:16]}")
b2 = get(f"{node2}/blocks/{tip_hash}")
check(b2["hash"] == tip_hash and b2["status"] == "valid" and b2["peer"],
      f"GET node2 /blocks/<tip hash>: status {b2['status']}, received from {b2['peer']}")
data, headers = get(base + "/model", raw=True)
h = {k.lower(): v for k, v in headers.items()}
check(len(data) > 1000 and int(h["x-polchain-height"]) >= tip_h,
      f"GET /model: {len(data)} bytes of safetensors at height {h['x-polchain-height']}")
check(get(base + "/tips")[0]["status"] == "active", "GET /tips: active tip first")
peers = get(base + "/peers")
check(len(peers) >= 1, f"GET /peers: {[p['url'] for p in peers]}")
spec = get(base + "/spec")
check(spec.get("name") == st["preset"], f"GET /spec: {spec.get('name')}")
PYEOF
}
log "REST API checks"
api_check "http://127.0.0.1:$NODE0_PORT" "http://127.0.0.1:$NODE2_PORT" "$tip_h" "$tip_hash" \
  || die "REST API checks"

# healthchecks should be passing by now (or still starting within start_period), never unhealthy
for svc in node0 node1 node2; do
  hs=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$("${COMPOSE[@]}" ps -q "$svc")")
  log "$svc health: ${hs:-none}"
  [ "$hs" != unhealthy ] || die "$svc is unhealthy"
done
ok=1
