"""Harnesses for the attack suite (test_attacks.py): the paper's rules and protocol v2 side by side.

* ``PaperChain``: the ``dgg-paper`` research preset's validation pipeline held in memory -- the
  shared header rules (consensus.validation.validate_header), the weights body
  (consensus.paper.decode_weights) and the paper's proof (consensus.paper.validate_proof). Nodes
  refuse to run that preset, so this is how its rules are exercised; it uses the node's
  thread count for replays, as the paper fixes none.
* ``mine_paper``: an honest miner under the paper's rules (Algorithm 1: train, publish W and P).
* ``V2Chain``: a real ``node.chain.Chain`` on the tiny preset with honest v2 blocks on it.
* Channel symmetries of the tiny CNN (sign flip, permutation) that leave its function unchanged.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus import errors, paper
from consensus.block import PaperHeader, genesis_header
from consensus.hashing import ZERO_HASH
from consensus.requirements import Requirement, derive_requirements, requirements_hold_with_margin
from consensus.spec import ChainSpec
from consensus.training import Replayer, genesis_state
from consensus.validation import validate_header, validate_records
from consensus.weights import State, clone_state, encode_state, weights_hash

HONEST_KEY = Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32)
THIEF_KEY = Ed25519PrivateKey.from_private_bytes(bytes([2]) * 32)
GAP_MS = 10_000     # dgg-paper's target interval: the retarget (from height 12) keeps the parent's k, as paper_header does
# tiny-cnn: conv{l} feeds bn{l} (train mode, then ReLU); conv3's channels feed linear's input columns
CONV_BN = {"conv1.weight": "bn1", "conv2.weight": "bn2", "conv3.weight": "bn3"}


# == the paper's rules ============================================================================
@dataclass
class PaperBlock:
    header: PaperHeader
    w: State            # W, the published body (the state before the winning step)

    @property
    def body(self) -> bytes:
        return encode_state(self.w)


class PaperChain:
    """The dgg-paper pipeline over an in-memory chain (a consensus.validation.ChainView)."""

    def __init__(self, spec: ChainSpec, dataset):
        assert spec.is_paper
        self.spec = spec
        self.replayer = Replayer(spec, dataset)
        self.template = genesis_state(spec)
        self.genesis = genesis_header(spec)
        self.headers = {self.genesis.hash: self.genesis}
        self.post: dict[str, State] = {self.genesis.hash: genesis_state(spec)}   # W' of each block
        self.bodies: dict[str, bytes] = {}                                         # W of each block, published
        self.tip = self.genesis

    def header(self, block_hash: str):
        return self.headers.get(block_hash)

    def is_invalid(self, block_hash: str) -> bool:
        return False

    def check(self, header: PaperHeader, body: bytes) -> str:
        """The verdict without storing: "accepted" or the reason code."""
        try:
            parent = validate_header(header, self.spec, self, header.timestamp_ms + 1000)
            w = paper.decode_weights(header, body, self.spec, self.template)
            validate_records(header, (), self.spec)
            paper.validate_proof(header, parent, w, self.replayer, self.spec)
        except errors.BlockError as exc:
            return exc.code
        return "accepted"

    def submit(self, header: PaperHeader, body: bytes) -> str:
        verdict = self.check(header, body)
        if verdict == "accepted":
            self.headers[header.hash] = header
            self.bodies[header.hash] = body
            w = paper.decode_weights(header, body, self.spec, self.template)
            self.post[header.hash] = self.replayer.update(w, header.batch)
            if header.height > self.tip.height:
                self.tip = header
        return verdict


def paper_header(spec: ChainSpec, parent: PaperHeader, w: State, batch, acc: tuple[int, int],
                 key: Ed25519PrivateKey = HONEST_KEY, **changes) -> PaperHeader:
    h = PaperHeader(version=spec.header_version, chain_id=spec.chain_id, height=parent.height + 1,
                    parent=parent.hash, timestamp_ms=parent.timestamp_ms + GAP_MS, difficulty=parent.difficulty,
                    miner="", batch=tuple(batch), weights_hash=weights_hash(w), acc_before=acc[0],
                    acc_after=acc[1], records_root=ZERO_HASH)
    return replace(h, **changes).signed(key)


def paper_requirements(chain: PaperChain, parent: PaperHeader) -> tuple[Requirement, ...]:
    return derive_requirements(parent.hash, parent.difficulty, chain.replayer.index.total)


def mine_paper(chain: PaperChain, key: Ed25519PrivateKey = HONEST_KEY, seed: int = 0,
               max_attempts: int = 50_000) -> PaperBlock:
    """Algorithm 1 on the paper's rules: train from the tip's W' until one step meets R with the
    miner's margin and improves accuracy with room to spare; publish W and P."""
    spec, r, parent = chain.spec, chain.replayer, chain.tip
    reqs = paper_requirements(chain, parent)
    rng = random.Random(seed)
    r.load(chain.post[parent.hash])
    for _ in range(max_attempts):
        batch = tuple(rng.sample(range(spec.dataset.train_size), spec.training.batch_size))
        w = r.state()
        before = r.index.gather(reqs)
        r.step(batch)
        if requirements_hold_with_margin(before, r.index.gather(reqs), reqs, spec.requirements.margin_ulps,
                                         float(spec.requirements.margin_abs)):
            w_after, acc_after = r.state(), r.accuracy()
            acc_before = r.accuracy(w)
            r.load(w_after)
            if (acc_before.borderline + acc_after.borderline <= spec.evaluation.claim_tolerance
                    and acc_after.correct - acc_after.borderline > acc_before.correct + acc_before.borderline):
                return PaperBlock(paper_header(spec, parent, w, batch, (acc_before.correct, acc_after.correct),
                                               key), w)
    raise AssertionError(f"no paper block in {max_attempts} attempts")


# == channel symmetries of the tiny CNN ==========================================================
def flip_channel(w: State, bn: str, channel: int) -> State:
    """Negate output channel ``channel`` of the conv feeding ``bn`` with the BN's gamma and running mean:
    the network's outputs are bit-identical in train and eval mode, and every weight change of that
    conv channel and of gamma is exactly negated."""
    conv = {v: k for k, v in CONV_BN.items()}[bn]
    w = clone_state(w)
    for name in (conv, f"{bn}.weight", f"{bn}.running_mean"):
        w[name][channel] = -w[name][channel]
    return w


def permute_layer3(w: State, a: int, b: int) -> State:
    """Swap channels a and b of conv3/bn3 and the matching input columns of the linear head."""
    w = clone_state(w)
    for name in ("conv3.weight", "bn3.weight", "bn3.bias", "bn3.running_mean", "bn3.running_var"):
        w[name][[a, b]] = w[name][[b, a]]
    w["linear.weight"][:, [a, b]] = w["linear.weight"][:, [b, a]]
    return w


def flip_channel_of(replayer: Replayer, index: int) -> tuple[str, int] | None:
    """(bn name, channel) whose flip negates the change of flat parameter ``index``; None if none does."""
    names = [n for n, _ in replayer.model.named_parameters()]
    i, off = replayer.index.locate(index)
    name, shape = names[i], replayer.params[i].shape
    if name in CONV_BN:
        return CONV_BN[name], off // (shape[1] * shape[2] * shape[3])
    if name.startswith("bn") and name.endswith(".weight"):
        return name.split(".")[0], off
    return None


def flips_for(replayer: Replayer, reqs, before: torch.Tensor, after: torch.Tensor) -> set[tuple[str, int]] | None:
    """The channel flips that put every required change in its direction, or None if flips cannot:
    a zero change, a wrong-signed change no flip reaches, or one channel holding both a right and a
    wrong change."""
    need: dict[tuple[str, int], bool] = {}
    for r, b, a in zip(reqs, before.tolist(), after.tolist()):
        d = (a - b) * r.direction
        if d == 0:
            return None
        ch = flip_channel_of(replayer, r.index)
        if ch is None:
            if d < 0:
                return None
            continue
        if need.setdefault(ch, d < 0) != (d < 0):
            return None
    return {ch for ch, flip in need.items() if flip}


def touched_channels(replayer: Replayer, reqs) -> set[int]:
    """conv3/bn3 channels (= linear input columns) that hold a requirement."""
    names = [n for n, _ in replayer.model.named_parameters()]
    out = set()
    for r in reqs:
        i, off = replayer.index.locate(r.index)
        name, shape = names[i], replayer.params[i].shape
        if name == "conv3.weight":
            out.add(off // (shape[1] * shape[2] * shape[3]))
        elif name.startswith("bn3."):
            out.add(off)
        elif name == "linear.weight":
            out.add(off % shape[1])
    return out
