"""The node as the network sees it: ``p2p.node_link.NodeLink`` over the service and its chain."""
from __future__ import annotations

from typing import TYPE_CHECKING

from consensus.block import Block, BlockHeader
from consensus.validation import ChainView
from p2p.node_link import NetConfig, Tip

if TYPE_CHECKING:
    from .outcome import Outcome
    from .service import NodeService


class ServiceLink:
    """Everything ``p2p/`` may ask of the node: blocks through ``NodeService.admit`` (the relay: the lanes)
    or ``NodeService.submit_remote`` (sync), headers through ``NodeService.submit_header(s)``."""

    def __init__(self, service: "NodeService"):
        self._service = service
        self._chain = service.chain
        self.spec = service.spec

    def submit(self, block: Block, peer: str | None, *, assumed: bool = False) -> "Outcome":
        return self._service.submit_remote(block, peer, assumed=assumed)

    def admit(self, block: Block, origin: str) -> "Outcome":
        return self._service.admit(block, origin)

    def submit_header(self, header: BlockHeader, peer: str | None) -> "Outcome":
        return self._service.submit_header(header, peer)

    def submit_headers(self, headers: list[BlockHeader], peer: str | None) -> list["Outcome"]:
        return self._service.submit_headers(headers, peer)

    def accept_assumed(self, blocks: list[Block], peer: str | None) -> list["Outcome"]:
        return self._service.accept_assumed(blocks, peer)

    def status(self, block_hash: str) -> str | None:
        return self._chain.store.status(block_hash)

    def tip(self) -> Tip:
        t = self._chain.tip()
        return Tip(t.height, t.hash, t.cumulative_work)

    def work(self, block_hash: str) -> int | None:
        b = self._chain.store.get(block_hash)
        return b.cumulative_work if b is not None else None

    def headers(self) -> ChainView:
        return self._chain.view

    def missing_parents(self) -> list[str]:
        return self._chain.missing_orphan_parents()

    def has_state(self, state_hash: str) -> bool:
        return self._chain.store.weights.has(state_hash)

    def put_state(self, state_hash: str, data: bytes) -> None:
        self._chain.store.weights.put(state_hash, data)


def net_config(settings) -> NetConfig:
    return NetConfig(url=settings.url, peers=tuple(settings.peers), max_peers=settings.max_peers,
                     poll_interval=settings.poll_interval, discover=settings.discover,
                     assume_valid=settings.assume_valid, datadir=settings.datadir)
