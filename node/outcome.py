"""``Outcome``: the chain's answer to one submitted block or header (what the API and peers hear)."""
from __future__ import annotations

from dataclasses import dataclass, field

from consensus.errors import Stage, Verdict


@dataclass
class Outcome:
    status: Verdict
    code: str = ""
    detail: str = ""
    block_hash: str = ""
    reorg_depth: int = 0
    new_tip: bool = False
    connected: list[str] = field(default_factory=list)  # orphans connected as a result
    stage: Stage | None = None     # the validation stage that judged an invalid block
    relayed_early: bool = False    # announced to peers once its work was checked (fast relay)

    @property
    def ok(self) -> bool:
        return self.status in (Verdict.ACCEPTED, Verdict.HEADER_OK)
