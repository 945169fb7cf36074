#!/usr/bin/env bash
# One prepared GPU check. First (protocol v3, consensus): the exact step on the GPU against the committed
# known answers (tests/known-answers-v4.json, tiny and ResNet-18: bit-identical or exit 1), and a tiny
# chain mined on the GPU verified by `polchain verify` on the CPU. Then the measurements of
# scripts/gpu_check.py: attempts/s of both miners on CUDA, share of the GPU's fp32 peak, validation
# time on the GPU, and GPU -> CPU agreement.
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
echo "gpu-check: known answers of the exact step on cuda" >&2
timeout 600 "$PY" -m tests.vectors --device cuda 2>&1 | tee "$OUT_DIR/gpu-check-known-answers.txt" >&2 || rc=1
echo "gpu-check: a tiny chain mined on cuda, verified on the cpu" >&2
CHAIN=$(mktemp -d)/chain
{ timeout 600 "$PY" -m node.cli mine --preset tiny --blocks 3 --device cuda --datadir "$CHAIN" --seed 1 \
  && CUDA_VISIBLE_DEVICES= timeout 600 "$PY" -m node.cli verify --datadir "$CHAIN"; } \
  2>&1 | tee "$OUT_DIR/gpu-check-verify.txt" >&2 || rc=1
if [ "$rc" -ne 0 ]; then
    echo "gpu-check: the GPU's exact step disagrees with the CPU's (a consensus bug): stopping here" >&2
    exit 1
fi
"$PY" scripts/gpu_check.py --out "$OUT_DIR/gpu-check.json" "$@" 2> >(tee "$OUT_DIR/gpu-check.log" >&2) >/dev/null || rc=$?
echo "gpu-check: exit $rc; results in $OUT_DIR/gpu-check.json, log $OUT_DIR/gpu-check.log" >&2
exit $rc
