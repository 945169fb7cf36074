"""What the network needs from the node, and nothing more: an explicit protocol.

``p2p/`` imports nothing from ``node/``; the node hands the network an object
satisfying ``NodeLink`` (node/p2p_link.py) and a ``NetConfig``. Every block the
network receives goes in as a ``consensus.block.Block``: through ``admit`` when the
relay fetched it for a sender (an announcement, a missing ancestor of one: it waits
in that sender's lane like a POSTed block), through ``submit`` when sync fetched it
from a peer this node chose (headers-first, its headers checked first), headers
through ``submit_headers`` (a batch) or ``submit_header`` (one: an invalid announced
header, to record), and snapshot blocks through ``accept_assumed`` (the node keeps
its metrics, mempool and relay in step; it relays a block once its work is
checked, p2p.md "Fast relay"), and every question about the chain is
one of ``status``, ``tip``, ``work``, ``headers`` and ``missing_parents``; post-states
for snapshot sync go through ``has_state`` and ``put_state``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from consensus.block import Block, BlockHeader
from consensus.errors import BlockStatus, Stage, Verdict
from consensus.spec import ChainSpec
from consensus.validation import ChainView

VALID, INVALID, HEADER_ONLY = BlockStatus.VALID, BlockStatus.INVALID, BlockStatus.HEADER_ONLY


class Tip(NamedTuple):
    height: int
    hash: str
    work: int


class Judged(Protocol):
    """The node's answer to a submitted block (node.outcome.Outcome)."""
    status: Verdict
    code: str
    detail: str
    stage: Stage | None     # the validation stage that judged an invalid block (p2p/punishment.py)


class NodeLink(Protocol):
    spec: ChainSpec

    def submit(self, block: Block, peer: str | None, *, assumed: bool = False) -> Judged:
        """A block of a sync from ``peer``, judged at once on the caller's thread; ``assumed``: accepted
        on its header checks (assume-valid, its post-state installed)."""

    def admit(self, block: Block, origin: str) -> Judged:
        """A block the relay fetched from ``origin``: it waits for the validator in its origin's lane
        (known only if that origin delivered a valid block here or is configured), and is ignored
        ``busy`` when the lane has no room (or it gave way); blocks until the verdict."""

    def submit_header(self, header: BlockHeader, peer: str | None) -> Judged:
        """A header alone (header rules only; stored header-only)."""

    def submit_headers(self, headers: list[BlockHeader], peer: str | None) -> list[Judged]:
        """Headers-first in a batch: the header rules on each, in order, the good ones stored in one
        transaction; one verdict per header looked at, the batch stopping at the first that is not
        ``header-ok`` or ``duplicate`` (its verdict is the last)."""

    def accept_assumed(self, blocks: list[Block], peer: str | None) -> list[Judged]:
        """Snapshot sync: blocks up to the checkpoint (its post-state installed), on their header and
        records checks, stored in one transaction; verdicts as for ``submit_headers``."""

    def status(self, block_hash: str) -> str | None:
        """valid | invalid | header-only, or None when unknown."""

    def tip(self) -> Tip: ...

    def work(self, block_hash: str) -> int | None:
        """Cumulative work of a stored block (valid or header-only)."""

    def headers(self) -> ChainView:
        """The stored headers, for the header rules (consensus.validation.validate_header)."""

    def missing_parents(self) -> list[str]:
        """Parents of held orphans, most wanted first."""

    def has_state(self, state_hash: str) -> bool:
        """Whether the node keeps this post-state (safetensors content-addressed by its hash)."""

    def put_state(self, state_hash: str, data: bytes) -> None:
        """Keep a post-state that was checked against a header's ``state_hash``."""


@dataclass(frozen=True)
class NetConfig:
    url: str                                  # how peers reach us
    peers: tuple[str, ...] = ()               # --peer seeds
    max_peers: int = 32
    poll_interval: float = 2.0
    discover: bool = True
    assume_valid: str | None = None
    datadir: Path | None = None               # where the peer book is kept (None: not kept)
    handshake_timeout: float = 5.0
