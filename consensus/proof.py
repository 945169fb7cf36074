"""What binds a proof to the chain, to its miner and to its redraw epoch (protocol v4; docs/protocol.md §4.4).

* Batches: nonce ``n`` of a block by miner ``M`` on parent ``p`` in redraw epoch ``e`` trains on the S
  distinct train indices drawn from ``SHA-256("polchain-batch/4" | scrypt seed (``batch_seed``) | counter
  (u32 BE))``, four big-endian u64 per digest, rejection-sampled below the largest multiple of the
  train-set size, duplicates skipped. The epoch is in the seed (v4), so one training step is a
  candidate for one R only: a step computed for epoch e says nothing about epoch e's neighbours. A thief's key derives other batches, and labels cannot be picked without
  grinding nonces (whose effect R's index space removes: the label-predictable linear head is
  excluded).
* W: the parent's post-state advanced by the canonical steps of ``nonces[:-1]``; the winning
  step is ``nonces[-1]``. Nothing but training can produce a published state.
* R: drawn (consensus.requirements) from ``seed = SHA-256("polchain-R-seed/2" | chain id |
  parent's state hash | parent height (u64 BE) | epoch (u64 BE))``: only a new proof changes
  the parent's post-state, so its miner cannot re-roll R by re-signing timestamps, records or
  claims. ``epoch = max(0, t - t_parent) // redraw_interval`` re-draws R when a block is slow
  in coming (no permanent stall); v4 headers are stamped strictly after their parent
  (consensus.validation.validate_timestamp), so a miner who stamps its own block early moves the
  next block's epochs by at most that block's own interval.
"""
from __future__ import annotations

import hashlib
import struct

from .hashing import uniform_draws
from .requirements import IndexSpace, Requirement, derive_requirements
from .spec import ChainSpec

BATCH_DOMAIN = b"polchain-batch/4"
R_SEED_DOMAIN = b"polchain-R-seed/2"
SCRYPT_R, SCRYPT_P = 8, 1


def batch_seed(spec: ChainSpec, parent_hash: str, miner: str, epoch: int, nonce: int) -> bytes:
    """The costly half of a batch derivation (``proof.batch_work`` = L): ``scrypt(password = chain id |
    parent | miner | epoch (u64 BE) | nonce (u64 BE), salt = "polchain-batch/4", N = 2^L, r = 8, p = 1,
    32 bytes)``. Memory-hard (128 · r · N bytes), so a miner pays for every batch it looks at: a
    filter that picks batches before training (a surrogate of the gradient) still pays about one
    derivation per candidate it skips (docs/protocol.md §4.4, "Batch choice")."""
    w = spec.proof.batch_work
    password = (bytes.fromhex(spec.chain_id) + bytes.fromhex(parent_hash) + bytes.fromhex(miner)
                + struct.pack(">QQ", epoch, nonce))
    return hashlib.scrypt(password, salt=BATCH_DOMAIN, n=1 << w, r=SCRYPT_R, p=SCRYPT_P,
                          maxmem=128 * SCRYPT_R * (1 << w) + (1 << 20), dklen=32)


def derive_batch(spec: ChainSpec, parent_hash: str, miner: str, epoch: int, nonce: int) -> tuple[int, ...]:
    """The S distinct train indices of nonce ``nonce`` in redraw epoch ``epoch`` (docs/protocol.md §4.4)."""
    n, s = spec.dataset.train_size, spec.training.batch_size
    prefix = BATCH_DOMAIN + batch_seed(spec, parent_hash, miner, epoch, nonce)
    out: list[int] = []
    for i in uniform_draws(prefix, n, ">I"):
        if i not in out:
            out.append(i)
            if len(out) == s:
                break
    return tuple(out)


def redraw_epoch(spec: ChainSpec, parent_timestamp_ms: int, timestamp_ms: int) -> int:
    interval = spec.proof.redraw_interval_ms
    return max(0, timestamp_ms - parent_timestamp_ms) // interval if interval > 0 else 0


def r_seed(spec: ChainSpec, parent_state_hash: str, parent_height: int, epoch: int) -> str:
    return hashlib.sha256(R_SEED_DOMAIN + bytes.fromhex(spec.chain_id) + bytes.fromhex(parent_state_hash)
                          + struct.pack(">QQ", parent_height, epoch)).hexdigest()


def requirements_for(spec: ChainSpec, parent, timestamp_ms: int, k: int, space: IndexSpace) -> tuple[Requirement, ...]:
    """R for a child of ``parent`` stamped ``timestamp_ms``."""
    epoch = redraw_epoch(spec, parent.timestamp_ms, timestamp_ms)
    return derive_requirements(r_seed(spec, parent.state_hash, parent.height, epoch), k, space)
