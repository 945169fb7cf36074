"""Proof-of-learning (Jia et al., IEEE S&P 2021): record a training trajectory, verify it.

    from pol import ProofRecorder, verify_proof, dataset_hash, proof_summary

See docs/provenance.md for the format, what the Merkle root covers and the
calibrated thresholds. pol.lightning (optional Lightning callback) and pol.cli
(argparse subcommands) are imported on demand.
"""
from .calibration import CalibrationResult, calibrate
from .proof import ProofError, dataset_hash, model_hash, proof_summary, tensor_hash
from .recorder import ProofRecorder
from .verifier import DEFAULT_THRESHOLDS, Check, Thresholds, VerificationReport, verify_proof

__all__ = [
    "ProofRecorder", "verify_proof", "Thresholds", "DEFAULT_THRESHOLDS", "VerificationReport",
    "Check", "dataset_hash", "tensor_hash", "model_hash", "proof_summary", "ProofError",
    "calibrate", "CalibrationResult",
]
