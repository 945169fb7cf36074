"""The proof-of-learning on-disk format: hashes, manifest schema, safe file IO.

A proof directory holds

    manifest.json              what was trained, with what, and the commitments
    batches.safetensors        the data order: "indices" (int64, flat) + "lengths" (int64, per step)
    ckpt_<step>.safetensors    model state_dict ("model.<name>") + SGD momentum ("optim.<param>.momentum_buffer")

Everything here is written for files that may come from strangers: only
safetensors and JSON are parsed (never pickle / torch.load), every manifest
field is type- and range-checked before use, and file names are plain names
inside the proof directory (no separators, no "..", no symlinks).

The Merkle root (consensus.hashing.merkle_root) is taken over 32-byte leaves

    leaf 0    SHA-256(canonical_json(header))      header: see manifest_header()
    leaf 1    batches digest                       tensor_hash of batches.safetensors
    leaf 2+i  checkpoint i digest                  tensor_hash of ckpt i, in step order

so the root commits to the hyperparameters, dataset hash, model/dataset ids,
step count, checkpoint schedule, final model hash, data order and every
checkpoint. File names are locators only and are not committed.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from safetensors.torch import load as _st_load

from consensus.hashing import canonical_json, is_hex_hash, merkle_root, sha256

FORMAT = "pol-proof"
VERSION = 1
MANIFEST_NAME = "manifest.json"
BATCHES_NAME = "batches.safetensors"
MAX_MANIFEST_BYTES = 64 << 20
MAX_FILE_BYTES = 8 << 30
MAX_STEPS = 10 ** 9
MAX_U64 = 2 ** 64 - 1

MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim."
MOMENTUM_SUFFIX = ".momentum_buffer"

LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd",)

# dtypes a checkpoint or batch file may contain (anything else is refused)
ALLOWED_DTYPES = {
    torch.float64, torch.float32, torch.float16, torch.bfloat16,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
}

_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DECIMAL_RE = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?(e[-+]?[0-9]+)?")

if sys.byteorder != "little":  # raw tensor bytes are hashed as stored in memory
    raise ImportError("pol needs a little-endian machine (tensor hashes cover raw LE bytes)")


class ProofError(Exception):
    """A proof directory is malformed. `reason` is a report reason code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- hashing

def _u64(n: int) -> bytes:
    return n.to_bytes(8, "little")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _raw_bytes(t: torch.Tensor):
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _hash_tensor(h, name: str, t: torch.Tensor) -> None:
    """name, dtype, shape and raw little-endian bytes, each length-prefixed."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name!r} is not a tensor")
    nb, db = name.encode("utf-8"), _dtype_name(t.dtype).encode("ascii")
    h.update(_u64(len(nb)) + nb + _u64(len(db)) + db + _u64(t.dim()))
    h.update(b"".join(_u64(d) for d in t.shape))
    raw = _raw_bytes(t)
    h.update(_u64(len(raw)))
    h.update(raw)


def tensor_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a named tensor collection, in sorted (UTF-8) name order.

    Encoding: b"pol/tensors/v1\\0" || u64 count || for each name:
    u64 len || name || u64 len || dtype name ("float32") || u64 ndim ||
    u64 dims... || u64 nbytes || raw bytes (little-endian, C order).
    """
    h = hashlib.sha256(b"pol/tensors/v1\x00")
    h.update(_u64(len(tensors)))
    for name in sorted(tensors, key=lambda s: s.encode("utf-8")):
        _hash_tensor(h, name, tensors[name])
    return h.hexdigest()


def dataset_hash(*tensors: torch.Tensor) -> str:
    """SHA-256 (hex) over every byte of the dataset tensors, with dtypes and shapes.

    Tensors are hashed in the order given (e.g. inputs, targets), each with the
    tensor_hash encoding under the name "0", "1", ...; domain b"pol/dataset/v1\\0".
    """
    if not tensors:
        raise ValueError("dataset_hash needs at least one tensor")
    h = hashlib.sha256(b"pol/dataset/v1\x00")
    h.update(_u64(len(tensors)))
    for i, t in enumerate(tensors):
        _hash_tensor(h, str(i), t)
    return h.hexdigest()


def model_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hash of a model's weights: tensor_hash of its state_dict (plain names)."""
    return tensor_hash(state_dict)


def model_tensors(ckpt: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model state_dict stored in a checkpoint, with the "model." prefix removed."""
    n = len(MODEL_PREFIX)
    return {k[n:]: v for k, v in ckpt.items() if k.startswith(MODEL_PREFIX)}


# --------------------------------------------------------------------------- floats in JSON

def encode_float(x: Any) -> str:
    """Floats are stored as their shortest round-trip decimal string (canonical_json forbids floats)."""
    if isinstance(x, torch.Tensor):
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"expected a number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"expected a finite non-negative number, got {x!r}")
    return repr(x + 0.0)  # + 0.0 turns -0.0 into 0.0


def decode_float(s: Any, field: str) -> float:
    if not isinstance(s, str) or not _DECIMAL_RE.fullmatch(s):
        raise ProofError("bad-manifest", f"{field}: expected a decimal string, got {s!r}")
    x = float(s)
    if not math.isfinite(x) or repr(x) != s:
        raise ProofError("bad-manifest", f"{field}: {s!r} is not a canonical finite float")
    return x


# --------------------------------------------------------------------------- schema

def _fail(msg: str):
    raise ProofError("bad-manifest", msg)


def _int(v: Any, field: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:  # bool is refused too
        _fail(f"{field}: expected an integer in [{lo}, {hi}], got {v!r}")
    return v


def _str_id(v: Any, field: str) -> str:
    if not isinstance(v, str) or not _ID_RE.fullmatch(v):
        _fail(f"{field}: expected an identifier [A-Za-z0-9._-], got {v!r}")
    return v


def _hexhash(v: Any, field: str) -> str:
    if not is_hex_hash(v):
        _fail(f"{field}: expected 64 lowercase hex digits, got {v!r}")
    return v


def _keys(obj: Any, field: str, required: set[str]) -> dict:
    if not isinstance(obj, dict):
        _fail(f"{field}: expected an object")
    keys = set(obj)
    if keys != required:
        missing, extra = sorted(required - keys), sorted(keys - required)
        _fail(f"{field}: missing keys {missing}, unexpected keys {extra}")
    return obj


def check_file_name(name: Any, field: str = "file") -> str:
    """A plain file name inside the proof directory: no separators, no '..', no hidden files."""
    if (not isinstance(name, str) or not _FILE_RE.fullmatch(name) or ".." in name
            or not name.endswith(".safetensors")):
        raise ProofError("bad-manifest", f"{field}: refused file name {name!r}")
    return name


def check_augmentation(aug: Any, field: str = "hyperparams.augmentation"):
    """"none", or a seeded description {"name": id, "seed": int, "params": {id: str|int|bool}}."""
    if aug == "none":
        return "none"
    _keys(aug, field, {"name", "seed", "params"})
    _str_id(aug["name"], f"{field}.name")
    _int(aug["seed"], f"{field}.seed", 0, MAX_U64)
    params = aug["params"]
    if not isinstance(params, dict):
        _fail(f"{field}.params: expected an object")
    for k, v in params.items():
        _str_id(k, f"{field}.params key")
        if not isinstance(v, (str, int, bool)) or isinstance(v, float):
            _fail(f"{field}.params.{k}: expected string, integer or boolean")
        if isinstance(v, int) and not isinstance(v, bool):
            _int(v, f"{field}.params.{k}", -MAX_U64, MAX_U64)
    return aug


@dataclass(frozen=True)
class Hyperparams:
    optimizer: str
    lr: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    batch_size: int
    steps_per_epoch: int
    seed: int
    loss: str
    augmentation: Any  # "none" or a dict (see check_augmentation)

    KEYS = ("optimizer", "lr", "momentum", "dampening", "weight_decay", "nesterov",
            "batch_size", "steps_per_epoch", "seed", "loss", "augmentation")

    def to_json(self) -> dict:
        return {
            "optimizer": self.optimizer,
            "lr": encode_float(self.lr),
            "momentum": encode_float(self.momentum),
            "dampening": encode_float(self.dampening),
            "weight_decay": encode_float(self.weight_decay),
            "nesterov": self.nesterov,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "seed": self.seed,
            "loss": self.loss,
            "augmentation": self.augmentation,
        }

    @classmethod
    def from_json(cls, obj: Any) -> "Hyperparams":
        f = "hyperparams"
        _keys(obj, f, set(cls.KEYS))
        if obj["optimizer"] not in OPTIMIZERS:
            _fail(f"{f}.optimizer: unsupported {obj['optimizer']!r} (supported: {OPTIMIZERS})")
        if obj["loss"] not in LOSSES:
            _fail(f"{f}.loss: unsupported {obj['loss']!r} (supported: {LOSSES})")
        lr = decode_float(obj["lr"], f"{f}.lr")
        momentum = decode_float(obj["momentum"], f"{f}.momentum")
        dampening = decode_float(obj["dampening"], f"{f}.dampening")
        weight_decay = decode_float(obj["weight_decay"], f"{f}.weight_decay")
        if not 0.0 < lr <= 1e6:
            _fail(f"{f}.lr: must be in (0, 1e6]")
        if not 0.0 <= momentum < 1.0:
            _fail(f"{f}.momentum: must be in [0, 1)")
        if not 0.0 <= dampening <= 1.0:
            _fail(f"{f}.dampening: must be in [0, 1]")
        if not 0.0 <= weight_decay <= 1e6:
            _fail(f"{f}.weight_decay: must be in [0, 1e6]")
        if type(obj["nesterov"]) is not bool:
            _fail(f"{f}.nesterov: expected a boolean")
        if obj["nesterov"] and (momentum == 0.0 or dampening != 0.0):
            _fail(f"{f}.nesterov: needs momentum > 0 and dampening 0")
        return cls(
            optimizer=obj["optimizer"], lr=lr, momentum=momentum, dampening=dampening,
            weight_decay=weight_decay, nesterov=obj["nesterov"],
            batch_size=_int(obj["batch_size"], f"{f}.batch_size", 1, 2 ** 31),
            steps_per_epoch=_int(obj["steps_per_epoch"], f"{f}.steps_per_epoch", 1, MAX_STEPS),
            seed=_int(obj["seed"], f"{f}.seed", 0, MAX_U64),
            loss=obj["loss"],
            augmentation=check_augmentation(obj["augmentation"]),
        )


@dataclass(frozen=True)
class CheckpointRef:
    step: int
    file: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    model_id: str
    dataset_id: str
    dataset_hash: str
    hyperparams: Hyperparams
    checkpoint_every: int
    num_steps: int
    model_hash: str
    batches_file: str
    batches_sha256: str
    checkpoints: tuple[CheckpointRef, ...]
    merkle_root: str

    def epoch_of(self, step: int) -> int:
        return step // self.hyperparams.steps_per_epoch


MANIFEST_KEYS = {"format", "version", "model_id", "dataset_id", "dataset_hash", "hyperparams",
                 "checkpoint_every", "num_steps", "model_hash", "batches", "checkpoints",
                 "merkle_root"}


def checkpoint_steps(num_steps: int, every: int) -> list[int]:
    """Step 0, every k-th step, and the final step."""
    steps = list(range(0, num_steps + 1, every))
    if steps[-1] != num_steps:
        steps.append(num_steps)
    return steps


def _checkpoint_count(num_steps: int, every: int) -> int:
    return num_steps // every + 1 + (1 if num_steps % every else 0)


def parse_manifest(obj: Any) -> Manifest:
    """Validate a decoded manifest.json strictly; raises ProofError("bad-manifest")."""
    _keys(obj, "manifest", MANIFEST_KEYS)
    if obj["format"] != FORMAT:
        _fail(f"format: expected {FORMAT!r}")
    if type(obj["version"]) is not int or obj["version"] != VERSION:
        _fail(f"version: expected {VERSION}")
    hp = Hyperparams.from_json(obj["hyperparams"])
    every = _int(obj["checkpoint_every"], "checkpoint_every", 1, MAX_STEPS)
    num_steps = _int(obj["num_steps"], "num_steps", 1, MAX_STEPS)
    batches = _keys(obj["batches"], "batches", {"file", "sha256"})
    batches_file = check_file_name(batches["file"], "batches.file")
    cks = obj["checkpoints"]
    if not isinstance(cks, list):
        _fail("checkpoints: expected a list")
    if len(cks) != _checkpoint_count(num_steps, every):
        _fail(f"checkpoints: expected {_checkpoint_count(num_steps, every)} entries "
              f"for {num_steps} steps every {every}, got {len(cks)}")
    refs = []
    for i, (ck, step) in enumerate(zip(cks, checkpoint_steps(num_steps, every))):
        f = f"checkpoints[{i}]"
        _keys(ck, f, {"step", "file", "sha256"})
        if _int(ck["step"], f"{f}.step", 0, MAX_STEPS) != step:
            _fail(f"{f}.step: expected {step}, got {ck['step']}")
        refs.append(CheckpointRef(step, check_file_name(ck["file"], f"{f}.file"),
                                  _hexhash(ck["sha256"], f"{f}.sha256")))
    names = [r.file for r in refs] + [batches_file]
    if len(set(names)) != len(names):
        _fail("file names must be distinct")
    return Manifest(
        model_id=_str_id(obj["model_id"], "model_id"),
        dataset_id=_str_id(obj["dataset_id"], "dataset_id"),
        dataset_hash=_hexhash(obj["dataset_hash"], "dataset_hash"),
        hyperparams=hp,
        checkpoint_every=every,
        num_steps=num_steps,
        model_hash=_hexhash(obj["model_hash"], "model_hash"),
        batches_file=batches_file,
        batches_sha256=_hexhash(batches["sha256"], "batches.sha256"),
        checkpoints=tuple(refs),
        merkle_root=_hexhash(obj["merkle_root"], "merkle_root"),
    )


def manifest_header(obj: Mapping[str, Any]) -> dict:
    """The part of the manifest committed by Merkle leaf 0 (everything except
    file names, the per-file digests (own leaves) and the root itself)."""
    return {
        "format": obj["format"],
        "version": obj["version"],
        "model_id": obj["model_id"],
        "dataset_id": obj["dataset_id"],
        "dataset_hash": obj["dataset_hash"],
        "hyperparams": obj["hyperparams"],
        "checkpoint_every": obj["checkpoint_every"],
        "num_steps": obj["num_steps"],
        "checkpoint_steps": [c["step"] for c in obj["checkpoints"]],
        "model_hash": obj["model_hash"],
    }


def compute_merkle_root(obj: Mapping[str, Any]) -> str:
    """Merkle root of a (raw, JSON-decoded) manifest: see the module docstring."""
    leaves = [sha256(canonical_json(manifest_header(obj))),
              bytes.fromhex(obj["batches"]["sha256"])]
    leaves += [bytes.fromhex(c["sha256"]) for c in obj["checkpoints"]]
    return merkle_root(leaves)


# --------------------------------------------------------------------------- files

def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_constant(name):
    raise ValueError(f"{name} is not allowed")


def _no_float(text):
    raise ValueError(f"float literal {text} is not allowed (floats are decimal strings)")


def read_proof_file(proof_dir: str | os.PathLike, name: str, max_bytes: int) -> bytes:
    """Read a regular file by plain name from the proof dir (symlinks refused)."""
    if name != MANIFEST_NAME:
        check_file_name(name)
    path = os.path.join(os.fspath(proof_dir), name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise ProofError("missing-file", f"{name}: not found") from None
    except OSError as e:
        raise ProofError("missing-file", f"{name}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ProofError("bad-file", f"{name}: not a regular file (symlinks are refused)")
    if st.st_size > max_bytes:
        raise ProofError("bad-file", f"{name}: {st.st_size} bytes exceeds the limit {max_bytes}")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ProofError("bad-file", f"{name}: exceeds the limit {max_bytes}")
    return data


def load_manifest_obj(proof_dir: str | os.PathLike) -> dict:
    """Raw JSON of manifest.json (strict parser: no floats, NaN or duplicate keys)."""
    try:
        data = read_proof_file(proof_dir, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    except ProofError as e:
        raise ProofError("bad-manifest", str(e)) from None
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                          parse_constant=_no_constant, parse_float=_no_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProofError("bad-manifest", f"manifest.json: {e}") from None


def load_manifest(proof_dir: str | os.PathLike) -> Manifest:
    return parse_manifest(load_manifest_obj(proof_dir))


def load_tensors(proof_dir: str | os.PathLike, name: str,
                 max_bytes: int = MAX_FILE_BYTES) -> dict[str, torch.Tensor]:
    """Parse a safetensors file from the proof dir (never pickle)."""
    data = read_proof_file(proof_dir, name, max_bytes)
    try:
        tensors = _st_load(data)
    except Exception as e:  # the parser raises its own error types
        raise ProofError("bad-file", f"{name}: not a valid safetensors file ({e})") from None
    for k, t in tensors.items():
        if t.dtype not in ALLOWED_DTYPES:
            raise ProofError("bad-file", f"{name}: tensor {k!r} has unsupported dtype {t.dtype}")
    return tensors


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temporary file in the same directory, fsync, rename, fsync the directory."""
    path = os.fspath(path)
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp creates 0600; proofs are meant to be shared
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------- summary

def proof_summary(proof_dir: str | os.PathLike) -> dict:
    """What a model certificate needs: {"merkle_root", "model_hash", "steps", "dataset_hash"}.

    Checks the manifest, the Merkle root, the final checkpoint's hash and that its
    model tensors hash to the committed model_hash (raises ProofError otherwise).
    It does NOT replay training: use pol.verify_proof for that.
    model_hash == pol.model_hash(final_model.state_dict()).
    """
    obj = load_manifest_obj(proof_dir)
    m = parse_manifest(obj)
    if compute_merkle_root(obj) != m.merkle_root:
        raise ProofError("bad-merkle-root", "merkle_root does not match the manifest contents")
    final = m.checkpoints[-1]
    tensors = load_tensors(proof_dir, final.file)
    if tensor_hash(tensors) != final.sha256:
        raise ProofError("bad-checkpoint-hash", f"{final.file}: hash mismatch")
    if model_hash(model_tensors(tensors)) != m.model_hash:
        raise ProofError("bad-checkpoint-hash", f"{final.file}: model hash mismatch")
    return {"merkle_root": m.merkle_root, "model_hash": m.model_hash,
            "steps": m.num_steps, "dataset_hash": m.dataset_hash}
