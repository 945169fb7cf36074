"""Who is punished for a block: one rule, from the verdict, the stage that reached it and the sender.

Every ban for a block or header goes through ``punishment`` (node/service.py for blocks from the API
and peers, p2p/sync.py, p2p/bodies.py and p2p/relay.py for what peers serve). A peer that serves
bytes that are not a header at all is judged as an invalid header.
"""
from __future__ import annotations

from enum import Enum

from consensus.errors import Stage, Verdict


class Sender(Enum):
    OWN = "own"            # this node (its miner, its own tools)
    TRUSTED = "trusted"    # a configured trusted client (--trusted-client; loopback by default)
    REMOTE = "remote"      # a peer or an API client


class Punishment(Enum):
    NONE = "none"
    BAN = "ban"


def punishment(verdict: Verdict, stage: Stage | None, sender: Sender) -> Punishment:
    """A remote sender of a provably invalid block is banned, except when only the accuracy failed:
    such a block carried a real 2^k search and may have been relayed in good faith before the relay's
    own accuracy check (fast relay, docs/p2p.md). A bad body (records that are not the committed
    ones) leaves the header unjudged and nobody punished: the real body may come from another peer."""
    if sender is not Sender.REMOTE or verdict != Verdict.INVALID:
        return Punishment.NONE
    if stage == Stage.ACCURACY:
        return Punishment.NONE
    return Punishment.BAN
