"""What a chain checks before it starts: the store opens, the genesis is this spec's, the tip's W' is
intact. Each failure is a ``StartupError`` with a one-line remedy."""
from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import DatabaseError

from consensus import errors
from consensus.block import BlockHeader
from consensus.difficulty import work
from consensus.spec import ChainSpec
from consensus.training import CanonicalStep
from consensus.weights import State, decode_state, encode_state, weights_hash

from .startup_error import StartupError
from .store import VALID, Store

log = logging.getLogger("polchain.chain")


def open_store(datadir: Path) -> Store:
    """Open the SQLite store; a file SQLite cannot read at all is a clear start-up error."""
    try:
        store = Store(datadir)
        problem = store.integrity_problem()
    except DatabaseError as exc:
        problem = str(exc.orig) if getattr(exc, "orig", None) else str(exc)
    if problem:
        problem = " ".join(problem.split())     # SQLite's report spans lines: the error is one
        raise StartupError(f"SQLite store {datadir / 'chain.sqlite'} is corrupt: {problem}. Restore the datadir "
                           "from a backup, or move it aside and sync again from peers")
    return store


def init_genesis(store: Store, spec: ChainSpec, genesis: BlockHeader, state: State, step: CanonicalStep) -> None:
    """A new datadir gets the genesis block and its W' (measured on E once); an existing one must hold
    this spec's genesis."""
    removed = store.weights.clean_temp()
    if removed:
        log.info("removed %d partial weights files left by a crash", removed)
    got = weights_hash(state)
    if got != spec.model.genesis_weights_sha256:
        raise StartupError(
            f"genesis weights hash to {got}, but the chain spec pins {spec.model.genesis_weights_sha256}: "
            "this PyTorch build initialises the model differently; refusing to start")
    stored_genesis = store.hash_at(0)
    if stored_genesis is None:
        store.weights.put(got, encode_state(state))
        log.info("start-up: a new datadir: measuring the genesis model on E once (%d images)", spec.evaluation.size)
        measured = step.accuracy(state).correct
        check_genesis_accuracy(spec, measured)
        log.info("genesis model: %d/%d on E (the spec pins %d)", measured, spec.evaluation.size, genesis.acc_after)
        store.put_block(genesis, [], VALID, work(genesis.difficulty), acc=(None, measured))
        store.set_tip(genesis, [genesis.hash])
    elif stored_genesis != genesis.hash:
        other = store.raw_chain_id(stored_genesis) or "unknown"
        raise StartupError(
            f"the datadir holds chain {other[:16]}..., not this node's chain {spec.chain_id[:16]}... "
            f"({spec.name}, protocol v{spec.header_version}); a protocol v1, v2 or v3 datadir cannot be "
            "upgraded in place (v1 stored weights in blocks; v3 replays with the exact step; v4 headers carry "
            "a ticket and batches their redraw epoch): keep it for its node, or use another --datadir")


def check_genesis_accuracy(spec: ChainSpec, measured: int) -> None:
    """The genesis block claims the spec's pinned accuracy of the genesis model on E (block 1's floor, v4); a
    measurement outside the claim tolerance means this node's E is not the chain's (another dataset, or a
    damaged one) and every accuracy verdict it gave would be wrong."""
    pinned, tol = spec.evaluation.genesis_correct, spec.evaluation.claim_tolerance
    if spec.is_paper or abs(measured - pinned) <= tol:
        return
    raise StartupError(
        f"the genesis model scores {measured}/{spec.evaluation.size} on E here, but the chain spec pins "
        f"{pinned} (tolerance {tol}): this node's test split is not the chain's; check the dataset "
        "(--dataset-dir) against the spec's hashes")


def check_tip_weights(store: Store) -> None:
    """The tip's weights are the node's working state (mining, serving peers): a stored file that no
    longer hashes to the tip's state_hash stops the start-up with a clear message."""
    tip = store.tip()
    if tip is None:
        return
    want = tip.header.state_hash
    data = store.weights.get(want)
    if data is None:
        log.warning("the weights of the tip (height %d) are not stored", tip.height)
        return
    try:
        got = weights_hash(decode_state(data))
        problem = None if got == want else f"hashes to {got[:16]}..., not {want[:16]}..."
    except errors.BlockError as exc:
        problem = f"is unreadable ({exc.detail or exc.code})"
    if problem:
        raise StartupError(
            f"weights file {store.weights.path(want)} of the tip (height {tip.height}, block "
            f"{tip.hash[:16]}) {problem}: the file is corrupt (disk or filesystem damage). Restore the "
            "datadir from a backup, or move it aside and sync again from peers")
