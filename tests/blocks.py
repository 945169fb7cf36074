"""The tests' block factory: honest blocks, chains of them, header-only chains and junk headers.

``BlockSmith(spec, dataset, key, seed=..., gap_ms=...)`` makes the blocks the suites build:

* ``child(parent, state, view)``: an honest block on any parent, found by the reference miner
  (``miner.reference.ReferenceMiner``, seeded per call) from the parent's post-state, stamped
  ``gap_ms`` after the parent; ``blocks(n, ...)`` mines n of them in a line (seeds seed, seed+1, ...),
  into a MemoryView or submitted to a node chain. ``mine_block(spec, dataset, parent, state, view,
  key, ...)`` is ``child`` in one call.
* ``replayed(parent, state, nonces, ts)``: a child whose nonces the caller picked (no search): its
  state_hash and acc_after are what the nonces really give, R is not looked at.
* With a ``chain`` (a ``node.chain.Chain``; ``BlockSmith.open`` opens one in a datadir as a node
  does): ``next_block()`` / ``mine(n)`` mine on the chain's tip through the node's own
  ``node.mining.mine_on_tip`` and fast miner (seeded once), ``fork(dest, seed)`` copies the chain.
* ``header(on)`` / ``headers(n)``: signed headers whose proofs do not exist (nothing replays to
  them; only the headers-first path can use them), the spec's target interval apart unless told;
  every header rule holds (k by the retarget rule). ``junk(on, rng)`` is a random one of those, as
  a spammer sends; ``resign`` changes fields and signs again, so that only the intended rule breaks.
  Every header the smith signs carries a valid admission ticket (consensus.ticket); the module-level
  ``resign(header, key, spec)`` solves one when given the spec, and without it signs a header whose
  ticket is left as it was (a spec with ``ticket_bits`` 0 takes any ticket).

Blocks come back as ``MinedBlock`` (header, records as JSON objects, post-state W'). Everything is
deterministic given the seeds and the clock: ``gap_ms`` after the parent, for ``BlockSmith.open`` too
(None: the wall clock; no suite's chain should depend on it, tests/node/test_template_clock.py).
"""
from __future__ import annotations

import dataclasses
import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import Block, BlockHeader, genesis_header, public_key_hex
from consensus.data import Dataset
from consensus.difficulty import next_difficulty
from consensus.hashing import ZERO_HASH, sha256_hex
from consensus.proof import derive_batch, redraw_epoch
from consensus.records import Record
from consensus.spec import ChainSpec
from consensus.ticket import sign_with_ticket
from consensus.training import Accuracy, Replayer
from consensus.weights import State, encode_state, weights_hash
from tests.chain_spec import TINY_TEST_FILE

MINER_SEED = 0            # the reference miner's seed when a call names none
BLOCK_GAP_MS = 2000       # a block is stamped its parent's time + 2 s
SMITH_KEY = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)


def low_difficulty(spec: ChainSpec, k: int) -> ChainSpec:
    """The same rules with initial k (and minimum 1): another chain id, the same genesis weights."""
    return dataclasses.replace(spec, name=f"{spec.name}-k{k}",
                               difficulty=dataclasses.replace(spec.difficulty, initial=k, minimum=1))


def cheap_tickets(spec: ChainSpec, bits: int = 2) -> ChainSpec:
    """``spec`` with admission tickets of ``bits`` zero bits (about 2^bits scrypt evaluations each): another
    chain id, for tests of paths that take thousands of headers, not of the ticket's price."""
    return dataclasses.replace(spec, name=f"{spec.name}-t{bits}",
                               proof=dataclasses.replace(spec.proof, ticket_bits=bits))


def resign(header: BlockHeader, key: Ed25519PrivateKey, spec: ChainSpec | None = None, **changes) -> BlockHeader:
    """The header with ``changes``, signed again by ``key`` (so only the intended rule breaks); with ``spec``,
    with a new admission ticket for ``spec`` first."""
    changed = dataclasses.replace(header, **changes)
    return sign_with_ticket(spec, changed, key) if spec is not None else changed.signed(key)


class MemoryView:
    """A consensus.validation.ChainView held in memory: known headers and invalid hashes."""

    def __init__(self, headers: Iterable[BlockHeader] = (), invalid: Iterable[str] = ()):
        self.headers: dict[str, BlockHeader] = {}
        self.invalid: set[str] = set(invalid)
        for h in headers:
            self.add(h)

    def add(self, header: BlockHeader) -> "MemoryView":
        self.headers[header.hash] = header
        return self

    def header(self, block_hash: str) -> BlockHeader | None:
        return None if block_hash in self.invalid else self.headers.get(block_hash)

    def is_invalid(self, block_hash: str) -> bool:
        return block_hash in self.invalid

    def copy(self) -> "MemoryView":
        return MemoryView(self.headers.values(), self.invalid)


@dataclass(frozen=True)
class MinedBlock:
    header: BlockHeader
    records: list                       # the records as JSON objects (the block is header + records)
    state: State                        # W': the block's post-state, where the next miner continues
    parent_state: State | None = None   # W'_parent, where the block's replay starts (when the smith had it)
    attempts: int = 0

    @property
    def block(self) -> Block:
        return Block(self.header, self.records)

    @property
    def state_bytes(self) -> bytes:
        return encode_state(self.state)


def replay(spec: ChainSpec, r: Replayer, parent_state: State, parent: BlockHeader, miner: str,
           nonces: Sequence[int], timestamp_ms: int) -> State:
    """The post-state of these nonces for a child of ``parent`` stamped ``timestamp_ms`` (its batches are its
    redraw epoch's), written out from the protocol (not through validation)."""
    epoch = redraw_epoch(spec, parent.timestamp_ms, timestamp_ms)
    r.load(parent_state)
    for n in nonces:
        r.step(derive_batch(spec, parent.hash, miner, epoch, n))
    return r.state()


class BlockSmith:
    """Makes blocks of ``spec`` on ``dataset``, signed by ``key``; ``chain``: a node chain to mine on."""

    def __init__(self, spec: ChainSpec, dataset: Dataset | None, key: Ed25519PrivateKey = SMITH_KEY, *,
                 seed: int = MINER_SEED, gap_ms: int | None = BLOCK_GAP_MS, chain=None, datadir: Path | None = None):
        self.spec, self.dataset, self.key, self.seed, self.gap_ms = spec, dataset, key, seed, gap_ms
        self.chain, self.datadir = chain, datadir       # a node.chain.Chain to mine on, and its datadir
        self._replayer: Replayer | None = None
        self._miner = None

    # -- honest blocks on any parent (reference miner) -------------------------------------------
    @property
    def replayer(self) -> Replayer:
        if self._replayer is None:
            self._replayer = Replayer(self.spec, self.dataset)
        return self._replayer

    def stamp(self, parent: BlockHeader) -> Callable[[], int] | None:
        """The clock of a block on ``parent``: parent + gap_ms (None: the wall clock)."""
        if self.gap_ms is None:
            return None
        ts = parent.timestamp_ms + self.gap_ms
        return lambda: ts

    def patient_stamp(self, parent: BlockHeader, k: int) -> Callable[[], int] | None:
        """``stamp``, moved one redraw interval later after every 8 x 2^k reads (the reference miner reads
        it once per attempt): as the wall clock would, so that a search whose every trajectory falls below
        the floor sees the floor relax (with a fixed stamp the tiny preset's seed 6 found no block on
        block 3 in 20,000 attempts). 8 x the expected attempts: an ordinary block keeps parent + gap_ms."""
        fixed = self.stamp(parent)
        redraw = self.spec.proof.redraw_interval_ms
        if fixed is None or redraw <= 0:
            return fixed
        reads = itertools.count()
        patience = 8 << k
        return lambda: fixed() + (next(reads) // patience) * redraw

    def child(self, parent: BlockHeader, state: State, view, *, key: Ed25519PrivateKey | None = None,
              seed: int | None = None, k: int | None = None, now_ms: int | None = None,
              records: tuple[Record, ...] = (), max_attempts: int = 20_000) -> MinedBlock:
        """A valid block on ``parent`` continuing from the parent's post-state ``state``; k by the
        retarget rule over ``view`` unless given, stamped ``now_ms`` (default: see ``stamp``)."""
        from miner.reference import ReferenceMiner, make_job
        from miner.template import build_block

        key = key or self.key
        k = next_difficulty(self.spec, parent, view) if k is None else k
        clock = self.patient_stamp(parent, k) if now_ms is None else (lambda: now_ms)
        job = make_job(self.spec, parent, k, public_key_hex(key), view, now_ms=clock)
        found = ReferenceMiner(self.spec, self.replayer, seed=self.seed if seed is None else seed).mine(
            job, state, max_attempts=max_attempts)
        assert found is not None, f"no block in {max_attempts} attempts"
        header = build_block(self.spec, job, found, key, records).header
        return MinedBlock(header, [rec.body for rec in records], found.state, state, found.attempts)

    def blocks(self, n: int, parent: BlockHeader | None = None, state: State | None = None, view=None, *,
               seed: int | None = None, chain=None) -> list[MinedBlock]:
        """``n`` blocks in a line on ``parent`` (default: genesis), mined with seeds seed, seed + 1, ...
        Each is added to ``view`` (a MemoryView, default: one over genesis) or, given ``chain``, submitted
        to that node chain (it must accept it), whose view is then the view."""
        from consensus.training import genesis_state

        if parent is None:
            parent = genesis_header(self.spec)
            state = genesis_state(self.spec) if state is None else state
        if chain is not None:
            view = chain.view
        elif view is None:
            view = MemoryView([parent])
        seed = self.seed if seed is None else seed
        out: list[MinedBlock] = []
        for i in range(n):
            b = self.child(parent, state, view, seed=seed + i)
            if chain is not None:
                out_ = chain.submit(b.block)
                assert out_.status == "accepted", (out_.code, out_.detail)
            else:
                view.add(b.header)
            out.append(b)
            parent, state = b.header, b.state
        return out

    def replayed(self, parent: BlockHeader, parent_state: State, nonces: Sequence[int], timestamp_ms: int, *,
                 k: int | None = None, records_root: str = ZERO_HASH, replayer: Replayer | None = None,
                 ) -> tuple[BlockHeader, State, Accuracy]:
        """A signed child of ``parent`` whose state_hash and acc_after are what ``nonces`` really give
        from ``parent_state`` (k: the parent's unless given); R is not looked at (the caller picks
        nonces that meet it, or not)."""
        r = replayer or self.replayer
        state = replay(self.spec, r, parent_state, parent, public_key_hex(self.key), nonces, timestamp_ms)
        acc = r.accuracy(state)
        header = self.header(parent, timestamp_ms=timestamp_ms, k=k, nonces=tuple(nonces),
                             state_hash=weights_hash(state), acc_after=acc.correct, records_root=records_root)
        return header, state, acc

    # -- on a node chain's tip (the node's own miner) --------------------------------------------
    @classmethod
    def open(cls, datadir: Path, spec_file: Path | None = TINY_TEST_FILE, seed: int = MINER_SEED,
             dataset: Dataset | None = None, *,
             key: Ed25519PrivateKey = SMITH_KEY, gap_ms: int | None = BLOCK_GAP_MS) -> "BlockSmith":
        """A smith on an archival node chain in ``datadir`` of the chain in ``spec_file`` (default: the tests'
        chain, tests/chain_spec.py; None: the datadir's own spec.json), written as a node writes it; the
        dataset loaded as a node loads it unless given), stamping each block ``gap_ms`` after its parent
        (None: the wall clock, which made the node tests' template a new chain on every run and once
        left a fork on its block 2 without a block in 20000 attempts: issue 31.3)."""
        from node.chain import Chain
        from node.setup import open_chain, resolve_spec

        datadir = Path(datadir)
        spec = resolve_spec(datadir, None, spec_file)
        if dataset is None:
            chain = open_chain(datadir, spec, archival=True, progress=False)
        else:  # share an already loaded dataset (building it takes seconds)
            chain = Chain(spec, datadir, dataset, archival=True)
        return cls(spec, chain.dataset, key, seed=seed, gap_ms=gap_ms, chain=chain, datadir=datadir)

    @property
    def miner(self):
        """The fast miner (one per smith, seeded once): what ``next_block`` mines with."""
        if self._miner is None:
            from miner.search import make_miner
            self._miner = make_miner("fast", self.spec, self.dataset, device="cpu", seed=self.seed)
        return self._miner

    def next_block(self, *, submit: bool = False, records: tuple[Record, ...] = ()) -> MinedBlock:
        """A valid block on the chain's tip (the node's ``mine_on_tip``, signed by this smith's key),
        carrying ``records``; submitted to the chain (which must accept it) when ``submit``."""
        from node.mining import mine_on_tip

        block, found = mine_on_tip(self.chain, self.miner, self.key, records=lambda: records,
                                   now_ms=self.stamp(self.chain.tip().header))
        if submit:
            out = self.chain.submit(block)
            assert out.status == "accepted", (out.code, out.detail)
        return MinedBlock(block.header, block.wire_records, found.state, attempts=found.attempts)

    def mine(self, n: int) -> list[MinedBlock]:
        """``n`` blocks on the tip, each submitted."""
        return [self.next_block(submit=True) for _ in range(n)]

    def block_at(self, height: int) -> MinedBlock:
        """The block at ``height`` on the chain, mining up to it first."""
        while self.chain.tip().height < height:
            self.next_block(submit=True)
        b = self.chain.store.get(self.chain.store.hash_at(height))
        return MinedBlock(b.header, b.records, self.chain.load_weights(b.header.state_hash))

    def fork(self, dest: Path, seed: int) -> "BlockSmith":
        """Another smith on a copy of this chain (same dataset, key and clock, its own miner seed)."""
        return BlockSmith.open(self.copy_datadir(dest), None, seed, dataset=self.dataset, key=self.key,
                               gap_ms=self.gap_ms)

    def copy_datadir(self, dest: Path) -> Path:
        """A copy of the chain's datadir (connections closed first, so the WAL is checkpointed)."""
        self.chain.store.engine.dispose()
        shutil.copytree(self.datadir, dest, ignore=shutil.ignore_patterns("*.log"))
        return Path(dest)

    # -- headers with nothing behind them ----------------------------------------------------------
    def header(self, on: BlockHeader, *, view=None, timestamp_ms: int | None = None, k: int | None = None,
               key: Ed25519PrivateKey | None = None, salt: str = "", **fields) -> BlockHeader:
        """A header on ``on`` signed by ``key`` (default: the smith's). Unless given: stamped the spec's
        target interval after ``on``, k by the retarget rule over ``view`` (``on``'s without one), one
        nonce, a made-up post-state (``salt`` makes branches from one parent differ), no claimed
        accuracy, no records; ``fields`` (any header field) replace what is there before signing."""
        if timestamp_ms is None:
            timestamp_ms = on.timestamp_ms + self.spec.difficulty.target_interval_ms
        if k is None:
            k = on.difficulty if view is None else next_difficulty(self.spec, on, view)
        h = BlockHeader(version=self.spec.header_version, chain_id=self.spec.chain_id, height=on.height + 1,
                        parent=on.hash, timestamp_ms=timestamp_ms, difficulty=k, miner="", nonces=(1,),
                        state_hash=sha256_hex(f"{salt}{on.hash}".encode()), acc_after=0,
                        records_root=ZERO_HASH)
        return resign(h, key or self.key, self.spec, **fields)

    def headers(self, n: int | None = None, *, ancestors: Sequence[BlockHeader] | None = None,
                timestamps: Sequence[int] | None = None, gap_ms: int | None = None, salt: str = "",
                ) -> list[BlockHeader]:
        """Signed headers continuing ``ancestors`` (genesis .. parent; default: genesis alone), k by the
        retarget rule: ``n`` of them ``gap_ms`` apart (default: the spec's target interval, so k stays
        where it is), or one per timestamp in ``timestamps``."""
        chain = list(ancestors or [genesis_header(self.spec)])
        view = MemoryView(chain)
        gap = gap_ms or self.spec.difficulty.target_interval_ms
        out: list[BlockHeader] = []
        parent = chain[-1]
        for i in range(len(timestamps) if timestamps is not None else n):
            ts = timestamps[i] if timestamps is not None else parent.timestamp_ms + gap
            parent = self.header(parent, view=view, timestamp_ms=ts, salt=salt)
            view.add(parent)
            out.append(parent)
        return out

    def junk(self, on: BlockHeader, rng, view=None, *, key: Ed25519PrivateKey | None = None,
             **changes) -> BlockHeader:
        """A well-formed header on ``on``, 1 ms after it, with nothing behind it (as a spammer sends):
        1-3 random nonces, a random post-state, a claimed improvement of one; then ``changes``."""
        fields = dict(nonces=tuple(rng.getrandbits(64) for _ in range(rng.randint(1, 3))),
                      state_hash=rng.randbytes(32).hex(), acc_after=on.acc_after + 1)
        return self.header(on, view=view, timestamp_ms=on.timestamp_ms + 1, key=key, **{**fields, **changes})

    def resign(self, header: BlockHeader, **changes) -> BlockHeader:
        """``header`` with ``changes``, a new ticket, signed again by this smith's key."""
        return resign(header, self.key, self.spec, **changes)


def mine_block(spec: ChainSpec, dataset: Dataset, parent: BlockHeader, state: State, view, key: Ed25519PrivateKey,
               **kw) -> MinedBlock:
    """``BlockSmith(spec, dataset, key).child(parent, state, view, **kw)``: one honest block on ``parent``."""
    return BlockSmith(spec, dataset, key).child(parent, state, view, **kw)
