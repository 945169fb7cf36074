"""The chain spec (genesis document). Its canonical-JSON SHA-256 is the chain id.

Everything consensus depends on is pinned here: architecture and genesis
weights hash, dataset and its hashes, the update rule, the evaluation set and
accuracy rule, requirement margins, difficulty and time rules, and size limits.
Real numbers are written as decimal strings (canonical JSON carries no floats)
and parsed to fp32 where they are used.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Any

from .hashing import canonical_json, sha256_hex

SPEC_FORMAT = "polchain-spec/4"
HEADER_VERSION = 4
RULES_V4 = "v4"         # the node's rules: v3's exact step, a ticket in every header, one R per candidate
                        # (docs/protocol.md §1.3, §4.4)
RULES_PAPER = "dgg-paper"   # research preset: the paper's rules (free W), forgeable


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    num_classes: int
    init_seed: int
    genesis_weights_sha256: str
    init: str = "polchain-genesis/3"    # consensus.model: the spec's own generator ("torch-default": dgg-paper)


@dataclass(frozen=True)
class DatasetSpec:
    id: str                     # "cifar10" | "synthetic"
    train_size: int
    test_size: int
    train_sha256: str | None    # SHA-256 of the decoded split (consensus.data.split_hash)
    test_sha256: str | None
    seed: int = 0               # synthetic only
    archive_md5: str | None = None  # cifar10 only: the publisher's checksum of the archive


@dataclass(frozen=True)
class TrainingSpec:
    lr: str
    batch_size: int
    mean: tuple[str, str, str]
    std: tuple[str, str, str]
    optimizer: str = "sgd"
    momentum: str = "0"
    weight_decay: str = "0"
    batchnorm: str = "train"
    augmentation: str = "none"
    dtype: str = "float32"
    step: str = "exact"         # the exact step of consensus.exact_step (docs/protocol.md §5); "fp32":
                                # PyTorch's fp32 kernels, not portable (the dgg-paper research preset only)
    exact_bits: int = 15        # quantised operands: integers with |q| <= 2^exact_bits


EXACT_BITS_RANGE = (8, 20)


def unsupported_training(spec: "ChainSpec") -> str | None:
    """Why the canonical step cannot run this spec's training rule, or None. A field the step does not
    implement is refused, never hashed into the chain id and then ignored."""
    t = spec.training
    want = dict(optimizer="sgd", momentum="0", weight_decay="0", batchnorm="train", augmentation="none",
                dtype="float32")
    for name, value in want.items():
        if getattr(t, name) != value:
            return f"training.{name} = {getattr(t, name)!r} is not implemented by the canonical step (only {value!r})"
    if t.step not in ("exact", "fp32") or (t.step == "fp32" and not spec.is_paper):
        return f"training.step = {t.step!r}: protocol v3 chains use 'exact' ('fp32' is for the dgg-paper preset)"
    if not EXACT_BITS_RANGE[0] <= t.exact_bits <= EXACT_BITS_RANGE[1]:
        return f"training.exact_bits = {t.exact_bits} outside {EXACT_BITS_RANGE[0]}..{EXACT_BITS_RANGE[1]}"
    return None


BATCH_WORK_RANGE = (1, 16)     # scrypt N up to 2^16: 64 MiB of memory per derivation (r = 8)
TICKET_WORK_RANGE = (1, 16)
TICKET_BITS_RANGE = (0, 64)


def unsupported_proof(spec: "ChainSpec") -> str | None:
    """Why this spec's proof rules cannot be run, or None."""
    p = spec.proof
    for name, (lo, hi) in (("batch_work", BATCH_WORK_RANGE), ("ticket_work", TICKET_WORK_RANGE),
                           ("ticket_bits", TICKET_BITS_RANGE)):
        if not lo <= getattr(p, name) <= hi:
            return f"proof.{name} = {getattr(p, name)} outside {lo}..{hi}"
    return None


@dataclass(frozen=True)
class EvaluationSpec:
    size: int                   # E = the first `size` test images
    claim_tolerance: int        # |claimed - recomputed| correct counts allowed
    regression_tolerance: int   # dgg-paper: acc(W') >= parent's claimed acc(W') - this
    miner_logit_margin: str     # miner: a prediction whose top-2 logit gap is below this is borderline
    batch: int = 250            # evaluation chunk size (results do not depend on it beyond fp32 noise)
    genesis_correct: int = 0    # the genesis model's correct count on E: the genesis block's claim (what block 1's
                                # floor starts from), checked at start-up against a measurement (docs/protocol.md §6)


@dataclass(frozen=True)
class RequirementsSpec:
    margin_ulps: int            # miner: |dw| >= margin_ulps * ulp(w)
    margin_abs: str             # miner: and |dw| >= margin_abs
    band_ulps: int = 0          # validators: |dw| >= band_ulps * ulp(w) (a band below the miner's margin)
    band_abs: str = "0"         # validators: and |dw| >= band_abs


@dataclass(frozen=True)
class ProofSpec:
    """What a proof is (docs/protocol.md, "Proof").

    ``rules`` = "v3": W is the parent's post-state advanced by 0..max_advance_steps canonical
    (exact) steps; every batch is derived from (parent, miner key, nonce); R comes from the parent's
    post-state and the redraw epoch, over the parameters not excluded. ``rules`` = "dgg-paper": the paper's rules (free W
    carried in the body, batch indices in the header, R from the parent hash), for research only.
    """
    rules: str
    max_advance_steps: int = 0          # J
    redraw_interval_ms: int = 0         # R is re-drawn every this long after the parent (0: never)
    r_excluded: tuple[str, ...] = ()    # parameter-name prefixes outside R's index space
    min_improvement: int = 0            # acc(W') >= parent's claimed acc(W') + this (negative: a slack) ...
    floor_relax: int = 0                # ... - this per redraw epoch since the parent (v3: no stall by claims)
    batch_work: int = 6                 # log2 of scrypt's N in the batch derivation
    ticket_work: int = 8                # log2 of scrypt's N in the admission ticket (consensus.ticket)
    ticket_bits: int = 0                # the ticket's hash must start with this many zero bits (0: any ticket)


@dataclass(frozen=True)
class DifficultySpec:
    initial: int
    minimum: int
    maximum: int
    target_interval_ms: int
    retarget_window: int
    max_step: int


@dataclass(frozen=True)
class TimeSpec:
    genesis_timestamp_ms: int
    max_future_ms: int
    mtp_window: int


@dataclass(frozen=True)
class LimitsSpec:
    max_header_bytes: int
    max_weights_bytes: int
    max_records: int
    max_record_bytes: int

    @property
    def max_block_bytes(self) -> int:
        """The largest v3 block, header and records in their canonical encodings (a block carries no
        weights: ``max_weights_bytes`` bounds post-states only)."""
        return self.max_header_bytes + self.max_records * self.max_record_bytes


@dataclass(frozen=True)
class ChainSpec:
    name: str
    model: ModelSpec
    dataset: DatasetSpec
    training: TrainingSpec
    evaluation: EvaluationSpec
    requirements: RequirementsSpec
    difficulty: DifficultySpec
    time: TimeSpec
    limits: LimitsSpec
    proof: ProofSpec = ProofSpec(RULES_V4)
    record_types: tuple[str, ...] = ("model-certificate",)
    format: str = SPEC_FORMAT
    header_version: int = HEADER_VERSION

    # -- encodings -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @functools.cached_property
    def chain_id(self) -> str:
        """The hash of the whole (frozen) spec, computed once per spec object: every header check
        compares against it."""
        return sha256_hex(self.canonical_bytes())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChainSpec":
        if d.get("format") != SPEC_FORMAT:
            raise ValueError(f"unsupported spec format {d.get('format')!r} (want {SPEC_FORMAT})")
        want = {f.name for f in dataclasses.fields(cls)}
        if set(d) != want:
            raise ValueError(f"malformed chain spec: missing {sorted(want - set(d))}, unknown {sorted(set(d) - want)}")
        kw = d
        try:
            spec = cls(
                name=kw["name"],
                model=ModelSpec(**kw["model"]),
                dataset=DatasetSpec(**kw["dataset"]),
                training=_tuplify(TrainingSpec, kw["training"]),
                evaluation=EvaluationSpec(**kw["evaluation"]),
                requirements=RequirementsSpec(**kw["requirements"]),
                difficulty=DifficultySpec(**kw["difficulty"]),
                time=TimeSpec(**kw["time"]),
                limits=LimitsSpec(**kw["limits"]),
                proof=_tuplify(ProofSpec, kw["proof"]),
                record_types=tuple(kw["record_types"]),
                format=kw["format"],
                header_version=kw["header_version"],
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed chain spec: {exc}") from None
        problem = wrong_field(spec) or out_of_range(spec)
        if problem:
            raise ValueError(f"malformed chain spec: {problem}")
        problem = unsupported_training(spec) or unsupported_proof(spec)
        if problem:
            raise ValueError(f"unsupported chain spec: {problem}")
        return spec

    @classmethod
    def from_json(cls, text: str | bytes) -> "ChainSpec":
        return cls.from_dict(json.loads(text))

    def with_difficulty(self, k: int) -> "ChainSpec":
        """The same rules with difficulty k at genesis and as the minimum: a CPU-sized chain (another
        chain id; the name is left to the caller)."""
        if not 1 <= k <= self.difficulty.maximum:
            raise ValueError(f"difficulty {k}: outside 1..{self.difficulty.maximum}")
        return dataclasses.replace(self, difficulty=dataclasses.replace(self.difficulty, initial=k, minimum=k))

    # -- parsed numbers ----------------------------------------------------
    @property
    def is_paper(self) -> bool:
        return self.proof.rules == RULES_PAPER

    @property
    def lr(self) -> float:
        return float(self.training.lr)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.training.mean)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.training.std)


# fields written as decimal strings (canonical JSON carries no floats): they must parse as finite numbers
DECIMAL_FIELDS = {"training.lr", "training.mean", "training.std", "training.momentum", "training.weight_decay",
                  "evaluation.miner_logit_margin", "requirements.margin_abs", "requirements.band_abs"}


def wrong_field(obj, path: str = "") -> str | None:
    """The first field of a parsed spec whose value has the wrong JSON type (a string where an integer
    belongs, ``true`` for a number, a decimal string that is no number), as ``section.field: why``;
    None when every field fits its annotation. Caught here, a bad spec file is one line, not a
    traceback from wherever the field is first used."""
    for f in dataclasses.fields(obj):
        name = f"{path}{f.name}"
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            problem = wrong_field(value, name + ".")
            if problem:
                return problem
            continue
        kind = str(f.type)
        if kind.startswith("tuple"):
            ok = (isinstance(value, tuple) and all(isinstance(v, str) for v in value)
                  and (kind.endswith("...]") or len(value) == kind.count("str")))
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "str":
            ok = isinstance(value, str)
        elif kind == "str | None":
            ok = value is None or isinstance(value, str)
        else:
            ok = True
        if not ok:
            return f"{name} = {value!r} is not of type {kind}"
        if name in DECIMAL_FIELDS:
            for v in (value if isinstance(value, tuple) else (value,)):
                try:
                    number = float(v)
                except ValueError:
                    number = float("nan")
                if number != number or number in (float("inf"), float("-inf")):
                    return f"{name} = {value!r} is not a decimal number"
    return None


MAX_IMAGES = 10_000_000        # a split larger than this is a typo (CIFAR-10: 50,000 + 10,000)
MAX_SEED = (1 << 63) - 1

# every numeric field's range: (least, most), None for no bound; a str bound names another field
INT_RANGES: dict[str, tuple[int | str | None, int | str | None]] = {
    "model.num_classes": (1, None), "model.init_seed": (0, MAX_SEED),
    "dataset.train_size": (1, MAX_IMAGES), "dataset.test_size": (1, MAX_IMAGES), "dataset.seed": (0, MAX_SEED),
    "training.batch_size": (1, "dataset.train_size"), "training.exact_bits": (None, None),   # unsupported_training
    "evaluation.size": (1, "dataset.test_size"), "evaluation.claim_tolerance": (0, None),
    "evaluation.regression_tolerance": (0, None), "evaluation.batch": (1, None),
    "evaluation.genesis_correct": (0, "evaluation.size"),
    "requirements.margin_ulps": (0, None), "requirements.band_ulps": (0, None),
    "proof.max_advance_steps": (0, None), "proof.redraw_interval_ms": (0, None), "proof.min_improvement": (None, None),
    "proof.floor_relax": (0, None), "proof.batch_work": (None, None),                        # unsupported_proof
    "proof.ticket_work": (None, None), "proof.ticket_bits": (None, None),                  # unsupported_proof
    "difficulty.minimum": (1, "difficulty.maximum"), "difficulty.initial": ("difficulty.minimum", "difficulty.maximum"),
    "difficulty.maximum": (1, 256), "difficulty.target_interval_ms": (1, None), "difficulty.retarget_window": (1, None),
    "difficulty.max_step": (0, None),
    "time.genesis_timestamp_ms": (0, None), "time.max_future_ms": (0, None), "time.mtp_window": (1, None),
    "limits.max_header_bytes": (1, None), "limits.max_weights_bytes": (1, None), "limits.max_records": (0, None),
    "limits.max_record_bytes": (1, None), "header_version": (None, None),
}
# decimal strings: (least, whether the least itself is allowed)
DECIMAL_RANGES: dict[str, tuple[float | None, bool]] = {
    "training.lr": (0.0, False), "training.mean": (None, True), "training.std": (0.0, False),
    "training.momentum": (None, True), "training.weight_decay": (None, True),               # unsupported_training
    "evaluation.miner_logit_margin": (0.0, True), "requirements.margin_abs": (0.0, True),
    "requirements.band_abs": (0.0, True),
}


def _field(spec: "ChainSpec", name: str):
    obj = spec
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def out_of_range(spec: "ChainSpec") -> str | None:
    """The first numeric field of a (well-typed) spec outside its range, as ``section.field = value: why``
    (a negative image count or a batch of 0 was a torch error deep in start-up, or a node that ran);
    None when every one is in range. Every int and decimal field of the spec has an entry."""
    for name, (lo, hi) in INT_RANGES.items():
        v = _field(spec, name)
        low = _field(spec, lo) if isinstance(lo, str) else lo
        high = _field(spec, hi) if isinstance(hi, str) else hi
        if low is not None and v < low:
            return f"{name} = {v} is out of range: at least {low}" + (f" ({lo})" if isinstance(lo, str) else "")
        if high is not None and v > high:
            return f"{name} = {v} is out of range: at most {high}" + (f" ({hi})" if isinstance(hi, str) else "")
    for name, (lo, inclusive) in DECIMAL_RANGES.items():
        value = _field(spec, name)
        for v in (value if isinstance(value, tuple) else (value,)):
            if lo is not None and (float(v) < lo or (not inclusive and float(v) == lo)):
                return (f"{name} = {value!r} is out of range: "
                        f"{'at least' if inclusive else 'greater than'} {lo:g}")
    return None


def _tuplify(cls, d):
    d = dict(d)
    for k in ("mean", "std", "r_excluded"):
        if k in d:
            d[k] = tuple(d[k])
    return cls(**d)


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# -- presets ------------------------------------------------------------------
CIFAR_MEAN = ("0.4914", "0.4822", "0.4465")
CIFAR_STD = ("0.2470", "0.2435", "0.2616")
GENESIS_TIME_MS = 1_790_000_000_000  # 2026-09-21T13:33:20Z

# Pinned values: hashes of the genesis weights and decoded data (docs/protocol.md, "Presets").
# The cifar10 split hashes are not pinned yet: see docs/protocol.md.
TINY_GENESIS_WEIGHTS = "ee4ae506f1bb4a843417e01bfcaad1c709b657dd65046dc04937bb84f388502b"
TINY_TRAIN_SHA = "07779d6b06d50dfd783dd9240a7f994f540ee73c92e20e12feadc627c188570c"
TINY_TEST_SHA = "7561e1a547161b863909143c1bdb38a03c650430cbb5d9ff358562b7e174bd83"
PAPER_GENESIS_WEIGHTS = "2c9f278b7ba8f06b85e7cec72e28fde14f9bdbeb25505c340a4d816dbbb221f6"  # torch 2.x default init
RESNET_GENESIS_WEIGHTS = "5f0df9e8df320161e787061f0b055a04df36004de9afb92e5701587e9bdf8ac4"
# the genesis models' correct counts on E (the first 500 test images), measured by consensus.training's
# accuracy function (ResNet-18: on the official test images 0..499, docs/protocol.md §6)
TINY_GENESIS_CORRECT = 52
RESNET_GENESIS_CORRECT = 56
# admission tickets (consensus.ticket): scrypt N = 2^8, r = 8 (256 KiB, ~0.5 ms per evaluation on one
# core); the zero bits price a ticket above what rejecting a ticketed junk block costs a node
# (`polchain bench ticket`, docs/benchmarks.md section 14)
TICKET_WORK = 8
TINY_TICKET_BITS = 8
RESNET_TICKET_BITS = 14


def preset(name: str) -> ChainSpec:
    if name == "tiny":
        return ChainSpec(
            name="tiny",
            model=ModelSpec("tiny-cnn", 10, init_seed=1, genesis_weights_sha256=TINY_GENESIS_WEIGHTS),
            dataset=DatasetSpec("synthetic", train_size=10000, test_size=2000, seed=7,
                                train_sha256=TINY_TRAIN_SHA, test_sha256=TINY_TEST_SHA),
            training=TrainingSpec(lr="0.01", batch_size=4, mean=("0.5", "0.5", "0.5"), std=("0.25", "0.25", "0.25")),
            evaluation=EvaluationSpec(size=500, claim_tolerance=2, regression_tolerance=25,
                                      miner_logit_margin="0.0001", genesis_correct=TINY_GENESIS_CORRECT),
            requirements=RequirementsSpec(margin_ulps=4, margin_abs="1e-9", band_ulps=2, band_abs="5e-10"),
            # 10 s: 2.9 % orphans on the 12-node, 3-miner loopback net (2 s: 48.8 %, 5 s: 19-28 %;
            # docs/benchmarks.md section 9). k0 = 10 and steps of up to 2 from height 12 (issue 33.5): from
            # k0 = 8 and one step per window the 8-node, 3-miner loopback net made 1.89 s blocks and 33 %
            # orphans; now 0 of 68 orphaned, k 10 -> 12 -> 13 by height 22, where that net settles
            # (docs/benchmarks.md 9.1, docs/protocol.md section 7)
            difficulty=DifficultySpec(initial=10, minimum=1, maximum=40, target_interval_ms=10_000,
                                      retarget_window=10, max_step=2),
            time=TimeSpec(genesis_timestamp_ms=GENESIS_TIME_MS, max_future_ms=15_000, mtp_window=11),
            limits=LimitsSpec(max_header_bytes=8192, max_weights_bytes=1 << 20, max_records=64,
                              max_record_bytes=4096),
            proof=ProofSpec(RULES_V4, max_advance_steps=8, redraw_interval_ms=30_000, r_excluded=("linear.", "bn3."),
                            min_improvement=-3, floor_relax=3, batch_work=6,
                            ticket_work=TICKET_WORK, ticket_bits=TINY_TICKET_BITS),
        )
    if name == "cifar10-resnet18":
        return ChainSpec(
            name="cifar10-resnet18",
            model=ModelSpec("resnet18-cifar", 10, init_seed=1, genesis_weights_sha256=RESNET_GENESIS_WEIGHTS),
            dataset=DatasetSpec("cifar10", train_size=50000, test_size=10000, train_sha256=None,
                                test_sha256=None, archive_md5="c32a1d4ab5d03f1284b67883e8d87530"),
            training=TrainingSpec(lr="0.001", batch_size=4, mean=CIFAR_MEAN, std=CIFAR_STD),
            evaluation=EvaluationSpec(size=500, claim_tolerance=2, regression_tolerance=25,
                                      miner_logit_margin="0.0001", batch=100, genesis_correct=RESNET_GENESIS_CORRECT),
            requirements=RequirementsSpec(margin_ulps=4, margin_abs="1e-9", band_ulps=2, band_abs="5e-10"),
            # 300 s: a block reaches 12 CPU validators in ~37.5 s; the calibrated model gives 9.5 % orphans
            # at 240 s, 4.5 % at 480 s (docs/benchmarks.md section 9). k0 = 16 (issue 33.5): the chain's own
            # k is for GPU miners (a CPU mines with `polchain spec --k 4`); by `bench simulate --from-genesis`
            # 3 GPU miners at 300-1,700 candidates/s (an estimate: no GPU was measured) start with 47-288 s
            # blocks and orphan 1.5-6.5 % from genesis, where k0 = 10 orphaned 37-66 % of the first 200
            # blocks with CPU validators (docs/benchmarks.md 9.4)
            difficulty=DifficultySpec(initial=16, minimum=1, maximum=40, target_interval_ms=300_000,
                                      retarget_window=20, max_step=2),
            time=TimeSpec(genesis_timestamp_ms=GENESIS_TIME_MS, max_future_ms=15_000, mtp_window=11),
            limits=LimitsSpec(max_header_bytes=8192, max_weights_bytes=48 << 20, max_records=64,
                              max_record_bytes=4096),
            # out of R: the head and the BatchNorm layers whose outputs reach it through identity paths
            # only (the last block's bn2, the block before's bn2 and shortcut BatchNorm): their update
            # signs follow the batch's labels (77-93 % predicted, `polchain bench labels`, docs/benchmarks.md)
            proof=ProofSpec(RULES_V4, max_advance_steps=4, redraw_interval_ms=600_000,
                            r_excluded=("linear.", "layer4.0.bn2.", "layer4.0.shortcut.1.", "layer4.1.bn2."),
                            min_improvement=-3, floor_relax=5, batch_work=12,
                            ticket_work=TICKET_WORK, ticket_bits=RESNET_TICKET_BITS),
        )
    if name == "dgg-paper":
        # RESEARCH ONLY: the DGG paper's rules on the tiny model and data (W free in the body, batch
        # indices chosen by the miner, R from the parent hash). Forgeable: docs/protocol.md,
        # "v1 attacks and how v2 closes them". Nodes refuse to run it.
        tiny = preset("tiny")
        return dataclasses.replace(
            tiny, name="dgg-paper", header_version=1, training=dataclasses.replace(tiny.training, step="fp32"),
            difficulty=dataclasses.replace(tiny.difficulty, initial=8, max_step=1),     # tiny's before issue 33.5
            model=dataclasses.replace(tiny.model, init="torch-default", genesis_weights_sha256=PAPER_GENESIS_WEIGHTS),
            requirements=RequirementsSpec(margin_ulps=4, margin_abs="1e-9"),
            proof=ProofSpec(RULES_PAPER))
    raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")


PRESETS = ("tiny", "cifar10-resnet18", "dgg-paper")
NODE_PRESETS = ("tiny", "cifar10-resnet18")   # dgg-paper is for research and the attack suite only
