"""What the parts of the network share (p2p/network.py builds it)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from consensus.errors import Stage, Verdict

from .addresses import peer_key
from .client import PeerClient
from .node_link import NetConfig, NodeLink
from .peers import PeerBook
from .punishment import Punishment, Sender, punishment

log = logging.getLogger("polchain.p2p")


@dataclass
class Ctx:
    node: NodeLink
    cfg: NetConfig
    book: PeerBook
    client: PeerClient
    stop: threading.Event = field(default_factory=threading.Event)
    sync_hints: dict[str, int] = field(default_factory=dict)
    wake_sync: threading.Event = field(default_factory=threading.Event)
    _hints_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def spec(self):
        return self.node.spec

    @property
    def my_url(self) -> str:
        return self.cfg.url

    def request_sync(self, peer: str, target: int) -> None:
        """Ask the syncer to catch up from ``peer`` (it claims height ``target``)."""
        with self._hints_lock:
            self.sync_hints[peer] = max(target, self.sync_hints.get(peer, 0))
        self.wake_sync.set()

    def take_sync_hints(self) -> dict[str, int]:
        with self._hints_lock:
            hints, self.sync_hints = self.sync_hints, {}
        return hints

    def punish(self, peer: str, verdict: Verdict, stage: Stage | None, code: str) -> None:
        """What a peer served was judged ``verdict`` at ``stage``: ban it where ``punishment`` says so."""
        if punishment(verdict, stage, Sender.REMOTE) is Punishment.BAN:
            self.penalize(peer, code)

    def penalize(self, peer: str, code: str) -> None:
        """A provably invalid block or header came from ``peer`` (a peer URL, or an API client's host)."""
        if not peer or peer_key(peer) == self.book.own_key:
            return
        if not self.book.is_banned(peer) and self.book.ban(peer, code):
            log.warning("banning %s for %s", peer, code)


def now_ms() -> int:
    return int(time.time() * 1000)
