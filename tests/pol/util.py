"""Helpers for the pol tests: copy a proof, edit files, and re-seal a manifest the way a
dishonest prover could (recompute every digest and the Merkle root after editing)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pol import proof as P


def copy_proof(src, dst) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


def read_manifest(proof_dir) -> dict:
    return json.loads((Path(proof_dir) / P.MANIFEST_NAME).read_text())


def write_manifest(proof_dir, obj) -> None:
    (Path(proof_dir) / P.MANIFEST_NAME).write_text(json.dumps(obj, indent=2))


def edit_tensors(proof_dir, name, fn) -> None:
    """fn(dict of tensors) mutates the tensors of a safetensors file in place."""
    path = Path(proof_dir) / name
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path)


def flip_data_byte(proof_dir, name, offset_in_data=5) -> None:
    """Flip one byte inside the tensor data area of a safetensors file (header untouched)."""
    path = Path(proof_dir) / name
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    raw[8 + header_len + offset_in_data] ^= 0x01
    path.write_bytes(bytes(raw))


def reseal(proof_dir, mutate=None) -> dict:
    """Optionally mutate the manifest, then recompute every digest and the root."""
    proof_dir = Path(proof_dir)
    obj = read_manifest(proof_dir)
    if mutate:
        mutate(obj)
    for ck in obj["checkpoints"]:
        ck["sha256"] = P.tensor_hash(load_file(proof_dir / ck["file"]))
    obj["batches"]["sha256"] = P.tensor_hash(load_file(proof_dir / obj["batches"]["file"]))
    final = load_file(proof_dir / obj["checkpoints"][-1]["file"])
    obj["model_hash"] = P.model_hash(P.model_tensors(final))
    obj["merkle_root"] = P.compute_merkle_root(obj)
    write_manifest(proof_dir, obj)
    return obj


def replay_checks(report):
    return {c.name: c for c in report.checks if c.name.startswith("replay[")}


def noise_like(t: torch.Tensor, scale: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t.shape, generator=g, dtype=t.dtype) * scale
