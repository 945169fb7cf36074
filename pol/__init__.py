"""Proof-of-learning (Jia et al., IEEE S&P 2021): record a training trajectory, verify it.

    from pol import ProofRecorder, verify_proof, dataset_hash, proof_summary

See docs/provenance.md for the format, what the Merkle root covers and the
calibrated thresholds. pol.lightning (optional Lightning callback) and pol.cli
(argparse subcommands) are imported on demand.
"""
from __future__ import annotations

import importlib

# name -> submodule; imported on first use, so `import pol.cli` (polchain --help, status) does not
# import torch
_EXPORTS = {
    "CalibrationResult": "calibration", "calibrate": "calibration",
    "ProofError": "proof", "dataset_hash": "proof", "model_hash": "proof", "proof_summary": "proof",
    "tensor_hash": "proof", "ProofRecorder": "recorder", "DEFAULT_THRESHOLDS": "verifier", "Check": "verifier",
    "Thresholds": "verifier", "VerificationReport": "verifier", "verify_proof": "verifier",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
