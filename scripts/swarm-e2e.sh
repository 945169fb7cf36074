#!/usr/bin/env bash
# End-to-end check of docker-compose.yml on Docker Swarm: `docker swarm init` (only if this engine is in
# no swarm), build and tag the image, `docker stack deploy -c docker-compose.yml -c docker-compose.swarm.yml`
# (the swarm-only settings on top), wait until the three
# nodes share a tip at height >= E2E_HEIGHT through their published ports, check /status, /health and that
# the one-shot dataset service completed once and was not restarted; then `docker stack rm`, delete the
# stack's volumes, and `docker swarm leave --force` if this script initialized the swarm (also on
# failure or Ctrl-C).
#
#   scripts/swarm-e2e.sh
#
# Environment:
#   E2E_HEIGHT=3            height all nodes must share
#   E2E_TIMEOUT=420         seconds to wait for it (after the deploy)
#   E2E_BASE_PORT=18100     published ports BASE..BASE+2
#   E2E_STACK=polchain-e2e  stack name (its services and volumes are the ones removed)
#   POLCHAIN_PRESET=tiny  POLCHAIN_K  POLCHAIN_SPEC  POLCHAIN_DATASET_ARCHIVE   as for compose
#   POLCHAIN_IMAGE=polchain:swarm-e2e   TORCH_SPEC, TORCH_INDEX_URL: scripts/docker-build-image.sh
#   E2E_SKIP_BUILD=1        use POLCHAIN_IMAGE as it is
#   E2E_KEEP=1              leave the stack (and the swarm) up for inspection
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$(date +%s)
log() { printf '[swarm-e2e %4ss] %s\n' "$(( $(date +%s) - t_start ))" "$*"; }
die() { log "FAIL: $*"; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answering (docker info failed)"
STACK=${E2E_STACK:-polchain-e2e}
export POLCHAIN_PRESET=${POLCHAIN_PRESET:-tiny}
export POLCHAIN_IMAGE=${POLCHAIN_IMAGE:-polchain:swarm-e2e}
BASE=${E2E_BASE_PORT:-18100}
export NODE0_PORT=$BASE NODE1_PORT=$((BASE + 1)) NODE2_PORT=$((BASE + 2))
HEIGHT=${E2E_HEIGHT:-3}
TIMEOUT=${E2E_TIMEOUT:-420}
PY=$(command -v python3 || command -v python) || die "python3 is needed on the host for JSON checks"

# --- cleanup on exit ----------------------------------------------------------------------------------
inited=0; ok=0
cleanup() {
  rc=$?
  trap - EXIT INT TERM
  if [ "$ok" != 1 ]; then
    for svc in dataset node0 node1 node2; do
      log "service ${STACK}_$svc: tasks and last log lines"
      docker service ps --no-trunc --format '    {{.Name}} {{.CurrentState}} {{.Error}}' "${STACK}_$svc" 2>&1 | head -n 6 || true
      docker service logs --no-task-ids --tail 15 "${STACK}_$svc" 2>&1 | sed 's/^/    /' || true
    done
  fi
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    log "E2E_KEEP=1: stack left up; remove with: docker stack rm $STACK" \
        "$([ "$inited" = 1 ] && echo '&& docker swarm leave --force')"
  else
    log "docker stack rm $STACK"
    docker stack rm "$STACK" >/dev/null 2>&1 || true
    for _ in $(seq 60); do   # its containers go first; then its volumes can be removed
      [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] && break; sleep 1
    done
    vols=$(docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK")
    [ -z "$vols" ] || docker volume rm $vols >/dev/null || log "could not remove volumes: $vols"
    if [ "$inited" = 1 ]; then log "docker swarm leave --force"; docker swarm leave --force >/dev/null || true; fi
  fi
  log "$([ "$ok" = 1 ] && echo PASS || echo FAIL) in $(( $(date +%s) - t_start ))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- swarm --------------------------------------------------------------------------------------------
state=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" = inactive ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null 2>&1 || docker swarm init >/dev/null \
    || die "docker swarm init"
  inited=1
  log "docker swarm init: a one-node swarm (left again at the end)"
elif [ "$state" = active ]; then
  [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] || die "this engine is a swarm worker; run on a manager"
  log "using the swarm this engine is in (left as it is)"
else
  die "swarm state '$state'"
fi

# --- image --------------------------------------------------------------------------------------------
if [ "${E2E_SKIP_BUILD:-0}" != 1 ]; then
  t0=$(date +%s)
  scripts/docker-build-image.sh "$POLCHAIN_IMAGE" || die "image build"
  log "image $POLCHAIN_IMAGE built in $(( $(date +%s) - t0 ))s"
fi
docker image inspect "$POLCHAIN_IMAGE" >/dev/null 2>&1 || die "no image $POLCHAIN_IMAGE"

# --- deploy -------------------------------------------------------------------------------------------
docker stack rm "$STACK" >/dev/null 2>&1 && sleep 5 || true   # leftovers of an interrupted run
t_deploy=$(date +%s)
docker stack deploy --resolve-image never -c docker-compose.yml -c docker-compose.swarm.yml "$STACK" 2>&1 \
  | sed 's/^/    /'
[ "${PIPESTATUS[0]}" = 0 ] || die "docker stack deploy"
log "stack $STACK deployed (preset $POLCHAIN_PRESET, ports $BASE-$((BASE + 2))); waiting for a shared tip at" \
    "height >= $HEIGHT (timeout ${TIMEOUT}s)"

URLS="http://127.0.0.1:$NODE0_PORT http://127.0.0.1:$NODE1_PORT http://127.0.0.1:$NODE2_PORT"
poll() {  # "OK <height> <tip>" once all nodes share a tip at height >= HEIGHT, else a progress line
  "$PY" scripts/shared_tip.py "$HEIGHT" $URLS
}
failed_tasks() {  # tasks of the node services that ended in failure (a crash loop shows here)
  docker stack ps "$STACK" --format '{{.Name}} {{.CurrentState}}' 2>/dev/null | grep -E '_node[0-9]' \
    | grep -cE '^.* (Failed|Rejected)' || true
}
deadline=$(( t_deploy + TIMEOUT )); last=""; first_answer=""
while :; do
  out=$(poll)
  case "$out" in OK*) break ;; esac
  [ -z "$first_answer" ] && [ "$out" != "heights -/-/-" ] && first_answer=$(( $(date +%s) - t_deploy ))
  [ "$out" != "$last" ] && log "$out"; last=$out
  n=$(failed_tasks); [ "$n" -lt 3 ] || die "node tasks keep failing ($n failed tasks)"
  [ "$(date +%s)" -lt "$deadline" ] || die "no shared tip at height >= $HEIGHT after ${TIMEOUT}s ($out)"
  sleep 2
done
read -r _ tip_h tip_hash <<<"$out"
log "all 3 nodes share tip ${tip_hash:0:16} at height $tip_h: $(( $(date +%s) - t_deploy ))s after deploy" \
    "(first API answer after ${first_answer:-?}s)"

# --- checks -------------------------------------------------------------------------------------------
"$PY" - "$tip_h" $URLS <<'PYEOF' || die "REST API checks"
import json, sys, urllib.request
tip_h, urls = int(sys.argv[1]), sys.argv[2:]
def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())
def check(cond, what):
    if not cond:
        sys.exit(f"check failed: {what}")
    print(f"    ok  {what}")
sts = [get(u + "/status") for u in urls]
for i, (u, st) in enumerate(zip(urls, sts)):
    check(st["height"] >= tip_h and st["chain_id"] == sts[0]["chain_id"] and st["mining"]["enabled"] == (i < 2),
          f"node{i} GET /status: height {st['height']}, chain {st['chain_id'][:16]} ({st['preset']}), "
          f"mining {st['mining']['enabled']}, peers {len(get(u + '/peers'))}")
    check(get(u + "/health")["status"] == "ok", f"node{i} GET /health: ok")
PYEOF
tasks=$(docker service ps "${STACK}_dataset" --format '{{.CurrentState}}')
log "dataset service tasks: $(echo "$tasks" | tr '\n' ';')"
[ "$(echo "$tasks" | grep -c .)" = 1 ] && echo "$tasks" | grep -q '^Complete' \
  || die "the one-shot dataset service should have run once and completed"
for svc in node0 node1 node2; do
  n=$(docker service ps "${STACK}_$svc" -q | wc -l)
  log "${STACK}_$svc: $n task(s) $(docker service ps "${STACK}_$svc" --format '{{.CurrentState}}' | head -n1)"
done
ok=1
