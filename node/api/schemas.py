"""Wire schemas (kept apart from the database rows in node/store.py)."""
from __future__ import annotations

from pydantic import BaseModel, Field


class MiningStatus(BaseModel):
    enabled: bool
    device: str | None
    attempts_per_second: float
    blocks_found: int


class TipAccuracy(BaseModel):
    correct: int
    of: int


class Status(BaseModel):
    chain_id: str
    preset: str
    height: int
    tip: str
    cumulative_work: int
    difficulty: int
    peers: int
    syncing: bool
    tip_accuracy: TipAccuracy
    mining: MiningStatus
    version: str


class Header(BaseModel):
    version: int
    chain_id: str
    height: int
    parent: str
    timestamp_ms: int
    difficulty: int
    miner: str
    batch: list[int]
    weights_hash: str
    acc_before: int
    acc_after: int
    records_root: str
    signature: str


class Accuracy(BaseModel):
    claimed_before: int
    claimed_after: int
    measured_before: int | None
    measured_after: int | None
    of: int


class BlockOut(BaseModel):
    hash: str
    height: int
    status: str
    reason: str | None = None
    header: Header
    records: list[dict] = Field(default_factory=list)
    accuracy: Accuracy
    cumulative_work: int
    received_at: float
    peer: str | None = None
    in_best_chain: bool


class BlockList(BaseModel):
    blocks: list[BlockOut]
    next_start: int | None


class SubmitResult(BaseModel):
    status: str
    hash: str
    detail: str = ""


class TipOut(BaseModel):
    hash: str
    height: int
    status: str
    cumulative_work: int


class PeerOut(BaseModel):
    url: str
    state: str
    height: int | None = None
    failures: int = 0
    banned_until: float | None = None
    last_seen: float | None = None


class PeerAnnounce(BaseModel):
    url: str = Field(max_length=256)
