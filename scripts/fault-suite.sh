#!/usr/bin/env bash
# The long fault and load runs (tests/fault), which the default `pytest` run does not collect.
#
#   scripts/fault-suite.sh                 # everything, default counts (about 25 minutes on 2 cores)
#   scripts/fault-suite.sh -k crash        # a subset (pytest -k)
#   POLCHAIN_FAULT_ITER=0.25 scripts/fault-suite.sh   # fewer crash iterations, a shorter load run
#
# Every node process runs with --threads 1. The disk-full tests mount small tmpfs
# filesystems and skip themselves when not run as root. Figures (counts of cases
# tried, blocks lost, /status latencies) go to $POLCHAIN_FAULT_RESULTS
# (default build/fault-results.json); docs/security.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
export POLCHAIN_LONG=1
export POLCHAIN_FAULT_RESULTS="${POLCHAIN_FAULT_RESULTS:-build/fault-results.json}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
start=$(date +%s)
set +e
python -m pytest tests/fault -q -p no:cacheprovider -rA "$@"
rc=$?
set -e
echo "fault suite: exit $rc after $(( $(date +%s) - start )) s; figures in $POLCHAIN_FAULT_RESULTS"
if [ -f "$POLCHAIN_FAULT_RESULTS" ]; then
  python - "$POLCHAIN_FAULT_RESULTS" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    keys = [k for k in r if k not in ("test", "at", "verify", "by_kind", "first_errors")]
    print(f"  {r['test']:<24} " + ", ".join(f"{k}={r[k]}" for k in keys))
PY
fi
exit "$rc"
