#!/usr/bin/env bash
# One prepared GPU check for the cifar10-resnet18 rules (scripts/gpu_check.py says what it measures):
# attempts/s of both miners on CUDA, share of the GPU's fp32 peak, validation time on the GPU,
# and GPU -> CPU agreement on >= 1,000 steps that cleared the miner margin.
#
#   scripts/gpu-check.sh [gpu_check.py options]      e.g. --agreement-budget 300 --sample-dir DIR
#
# Results: $OUT/gpu-check.json (or results/gpu-check.json) and the log beside it. Exit status:
# 0 all agreed, 1 a disagreement or the agreement target not reached in the budget, 3 no CUDA.
# Whole run: about 5-6 minutes on one H200 with the defaults (agreement capped at 240 s).
# Python packages the box lacks can travel as wheels in .whl/ (installed into /tmp/site first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-results}

if ! command -v "$PY" >/dev/null; then
    echo "gpu-check: $PY not found (set PYTHON=...)" >&2; exit 3
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null; then
    echo "gpu-check: no CUDA GPU visible to torch on $(hostname) (torch.cuda.is_available() is False," \
         "or torch is missing); nothing measured. Run it on a machine with an NVIDIA GPU." >&2
    exit 3
fi
mkdir -p "$OUT_DIR"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total \
    --format=csv | tee "$OUT_DIR/gpu-check-nvidia-smi.csv" >&2 || true
export PYTHONUNBUFFERED=1
rc=0
"$PY" scripts/gpu_check.py --out "$OUT_DIR/gpu-check.json" "$@" 2> >(tee "$OUT_DIR/gpu-check.log" >&2) >/dev/null || rc=$?
echo "gpu-check: exit $rc; results in $OUT_DIR/gpu-check.json, log $OUT_DIR/gpu-check.log" >&2
exit $rc
