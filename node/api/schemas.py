"""Wire schemas (kept apart from the database rows in node/store.py)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field


class CurrentSearch(BaseModel):
    """The block the miner is searching for now."""
    height: int
    difficulty: int
    attempts: int = Field(description="attempts on this tip so far")
    seconds: float = Field(description="seconds on this tip so far")
    expected_attempts: int = Field(description="2^k: the expected attempts to meet the requirements R")
    r_hits: int = Field(0, description="steps on this tip that met R but were not published")
    acc_floor_failed: int = Field(0, description="... because W' fell below the parent's accuracy floor")
    acc_borderline_failed: int = Field(0, description="... because too many predictions on E were borderline")
    restarts: int = Field(0, description="trajectories abandoned at W_J for the parent's state")


class MiningStatus(BaseModel):
    enabled: bool
    device: str | None
    attempts_per_second: float
    blocks_found: int
    current: CurrentSearch | None = None


class SyncStatus(BaseModel):
    height: int | None = Field(None, description="while syncing: the height reached")
    target: int | None = Field(None, description="while syncing: the height aimed at")
    peer: str | None = Field(None, description="while syncing: the peer synced from")
    best_peer_height: int | None = Field(None, description="the highest tip a peer reported")


class TipAccuracy(BaseModel):
    correct: int
    of: int


class StoreStatus(BaseModel):
    ok: bool = Field(description="false while the last write to the store failed (disk full, read-only)")
    error: str | None = Field(None, description="why the last write failed")
    since: float | None = Field(None, description="when writes began to fail (Unix time)")
    failed_writes: int = Field(0, description="writes (blocks and probes) that failed since then")
    retry_in_s: float | None = Field(None, description="seconds until the store is probed again (backoff)")
    retry_pause_s: float | None = Field(None, description="the probe's current backoff: 2 s doubling to 60 s")


class Status(BaseModel):
    chain_id: str
    preset: str
    height: int
    tip: str
    cumulative_work: int
    difficulty: int
    peers: int = Field(description="peers that answer (connected)")
    peers_known: int = Field(0, description="peers in the book, answering or not (banned ones excluded)")
    syncing: bool
    tip_accuracy: TipAccuracy
    mining: MiningStatus
    version: str
    last_block_age_s: float | None = Field(None, description="seconds since the tip's timestamp (none at genesis)")
    miner_key: str = Field(description="this node's Ed25519 public key (hex): the miner field of its blocks")
    sync: SyncStatus
    store: StoreStatus


HASH = r"^[0-9a-f]{64}$"
U63 = dict(ge=0, le=(1 << 63) - 1)
MAX_U64 = (1 << 64) - 1


class Header(BaseModel):
    """A block header exactly as signed and hashed (consensus.block.BlockHeader.to_dict)."""
    version: int = Field(**U63)
    chain_id: str = Field(pattern=HASH)
    height: int = Field(**U63)
    parent: str = Field(pattern=HASH)
    timestamp_ms: int = Field(**U63)
    difficulty: int = Field(**U63)
    miner: str = Field(description="Ed25519 public key, hex ('' at genesis)")
    nonces: list[int] = Field(max_length=256, description="advance steps then the winning step; each nonce "
                              "(u64) derives a batch from parent, miner key and nonce")
    state_hash: str = Field(pattern=HASH, description="weights hash of the block's post-state W'")
    acc_after: int = Field(**U63, description="claimed correct count of W' on the evaluation set E")
    records_root: str = Field(pattern=HASH)
    ticket: int = Field(**U63, description="the admission ticket: scrypt of the header without signature and "
                        "ticket starts with the spec's ticket_bits zero bits (docs/protocol.md §1.3)")
    signature: str = Field(description="Ed25519 signature, hex ('' at genesis)")


class SubmitHeader(Header):
    """A header as POST /blocks takes it: ``Header`` with the shapes the node refuses before judging
    anything: a height of 1 or more (only genesis has 0), one to 256 nonces of 64 bits, the key and
    signature as hex. ``submit_header_schema`` adds what this node's chain spec fixes.

    (``Header`` itself leaves them free: the API also serves invalid blocks, stored with
    whatever a sender put there.)"""
    model_config = {"extra": "forbid"}        # BlockHeader.from_dict refuses unknown fields
    height: int = Field(ge=1, le=(1 << 63) - 1, description="the parent's height + 1 (only genesis has 0)")
    nonces: list[Annotated[int, Field(ge=0, le=MAX_U64)]] = Field(
        min_length=1, max_length=256, description="advance steps then the winning step; each nonce (u64) derives "
                                                  "a batch from parent, miner key and nonce")
    miner: str = Field(pattern=r"^[0-9a-f]{64}$", description="Ed25519 public key, hex")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="Ed25519 signature, hex")


def submit_header_schema(spec=None) -> dict:
    """The JSON schema of a header ``POST /blocks`` takes. With this node's ``spec`` (a
    ``consensus.spec.ChainSpec``) it also says what the chain fixes and the header rules check before the
    signature (consensus/validation.py ``validate_header_standalone``): the version, the chain id, the
    difficulty's range, the accuracy claim's range (0 to the size of E) and how many nonces a block has.
    What it cannot say: that the signature verifies, and everything that needs the chain (the parent,
    the height and difficulty after it, the time, the proof)."""
    schema = SubmitHeader.model_json_schema()
    if spec is None or spec.is_paper:         # dgg-paper headers are not taken by this API
        return schema
    props = schema["properties"]
    props["version"] = {**props["version"], "const": spec.header_version}
    props["chain_id"] = {**props["chain_id"], "const": spec.chain_id, "description": "this node's chain"}
    props["difficulty"] = {**props["difficulty"], "minimum": spec.difficulty.minimum,
                           "maximum": spec.difficulty.maximum}
    props["acc_after"] = {**props["acc_after"], "maximum": spec.evaluation.size}
    props["nonces"] = {**props["nonces"], "maxItems": spec.proof.max_advance_steps + 1}
    return schema


class Accuracy(BaseModel):
    claimed_after: int
    measured_after: int | None = Field(description="this node's own evaluation (None: not validated here)")
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
    validation_seconds: float | None = Field(None, description="how long this node took to check the block with "
                                             "its body (recent blocks since the node started; null otherwise)")


class ProofRequirement(BaseModel):
    i: int = Field(description="position in R")
    index: int = Field(description="flat index into the learnable parameters (definition order)")
    parameter: str = Field(description="the parameter tensor holding it")
    offset: int = Field(description="the index inside that tensor (flattened)")
    direction: Literal["increase", "decrease"]
    before: float | None = Field(None, description="w before the winning step (fp32); null without a replay")
    after: float | None = Field(None, description="w' after it")
    change: float | None = Field(None, description="w' - w")
    least: float | None = Field(None, description="the validators' band at this weight: the least |w' - w| "
                                "in the required direction, max(band ulps * ulp(max(|w|, |w'|)), band abs)")
    met: bool | None = Field(None, description="the change goes the required way and clears the band")


class ProofStep(BaseModel):
    step: int = Field(description="0..j: the advance steps, then the winning one")
    nonce: int
    winning: bool
    batch: list[int] = Field(description="the train-set indices the nonce derives (bound to parent and miner)")
    labels: list[int] = Field(description="their class labels")


class ProofBand(BaseModel):
    ulps: int
    abs: float


class ProofAccuracy(BaseModel):
    of: int = Field(description="the size of the evaluation set E")
    claimed: int = Field(description="acc(W') the header claims (correct predictions on E)")
    measured: int | None = Field(None, description="acc(W') as this node measured it (null: not measured here)")
    claim_tolerance: int
    floor: int | None = Field(None, description="the least acc(W') allowed: the parent's claim + min_improvement "
                              "- floor_relax per redraw epoch (null: parent unknown)")
    parent_claim: int | None = None
    min_improvement: int
    floor_relax: int


class ProofReplay(BaseModel):
    status: Literal["done", "state-unavailable", "busy", "parent-unknown", "failed"] = Field(
        description="done: the changes were replayed; state-unavailable: the parent's post-state is not kept "
                    "here (pruned); busy: another replay held the slot; parent-unknown: no parent header; "
                    "failed: the replay raised (an invalid block), see detail")
    detail: str
    seconds: float | None = None
    state_matches: bool | None = Field(None, description="the replayed post-state hashes to the header's "
                                       "state_hash")
    cached: bool = Field(False, description="answered from this node's cache of replayed proofs")


class BlockProof(BaseModel):
    hash: str
    height: int
    status: str
    parent: str
    miner: str
    difficulty: int = Field(description="k: the number of requirements in R")
    redraw_epoch: int | None = Field(None, description="R's redraw epoch (null: parent unknown)")
    r_seed: str | None = Field(None, description="the seed R is drawn from")
    band: ProofBand
    requirements: list[ProofRequirement]
    steps: list[ProofStep]
    accuracy: ProofAccuracy
    replay: ProofReplay


class BlockList(BaseModel):
    blocks: list[BlockOut]
    next_start: int | None


class SubmitResult(BaseModel):
    status: str = Field(description="accepted, or (202) orphan, ignored, header-ok, fetching")
    hash: str
    code: str = Field("", description="202: why the block is not judged yet (unknown-parent, parent-not-validated, "
                                      "time-too-new, state-unavailable, fetching, not-fetched); empty when accepted")
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
    ban_reason: str | None = None
    source: str | None = Field(None, description="configured | learned | introduced | announced | banned")
    last_seen: float | None = None


class CertificateIn(BaseModel):
    """A signed model certificate (``polchain pol register`` builds one); checked as a record."""
    model_config = {"extra": "forbid"}
    type: Literal["model-certificate"] = Field(description="record type")
    version: Literal[1] = Field(description="certificate format version")
    owner: str = Field(pattern=HASH, description="the owner's Ed25519 public key, hex")
    model_hash: str = Field(pattern=HASH, description="hash of the certified model's tensors")
    proof_root: str = Field(pattern=HASH, description="Merkle root of the proof of learning")
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] = Field(
        max_length=16, description="at most 16 string pairs (keys up to 64 characters, values up to 256); {} for none")
    timestamp_ms: int = Field(**U63)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="Ed25519 signature over the other fields")


class CertificateAccepted(BaseModel):
    status: str = Field(description="pending (in the mempool) or included (already in a block)")
    id: str = Field(description="the record id")


class CertificateList(BaseModel):
    model_hash: str
    certificates: list[dict] = Field(description="on the best chain, oldest first: the first is the original")
    pending: list[dict] = Field(description="submitted, not yet in a block")


class InputNormalization(BaseModel):
    """How an image becomes the model's input (the spec's training.mean and training.std)."""
    mean: list[float] = Field(description="per channel, in the order R, G, B")
    std: list[float] = Field(description="per channel, in the order R, G, B")
    formula: str = Field(description="the input from uint8 pixels: N x 3 x H x W, float32, channel c scaled "
                                     "as (pixel / 255 - mean[c]) / std[c]")


class ModelInfo(BaseModel):
    chain_id: str
    preset: str
    architecture: str = Field(description="consensus.model.build_model(architecture, num_classes)")
    num_classes: int
    height: int = Field(description="the tip whose post-step model GET /model returns")
    block: str
    accuracy: TipAccuracy
    format: str = Field(description="safetensors; never pickle")
    tensors: dict[str, list[int]] = Field(description="tensor name -> shape")
    normalization: InputNormalization = Field(description="how to turn an RGB image into the model's input: "
                                                          "no need to fetch /spec")
    load: str = Field(description="how to load it into PyTorch")


# A peer URL exactly as POST /peers takes it (p2p/addresses.py ``peer_url`` and the HTTP client must both
# take it): http(s), then an IPv4 address, an IPv6 address in brackets (no zone, no embedded IPv4), or a
# DNS name of letters, digits and hyphens whose last label is not all digits and with no ``xn--`` label
# (whether one decodes is more than a pattern can say: an IDN peer is named by its address); a port
# 1-65535 without leading zeros; a path of plain segments.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join((rf"({_H16}:){{7}}{_H16}", rf"({_H16}:){{1,7}}:", rf"({_H16}:){{1,6}}:{_H16}",
                  rf"({_H16}:){{1,5}}(:{_H16}){{1,2}}", rf"({_H16}:){{1,4}}(:{_H16}){{1,3}}",
                  rf"({_H16}:){{1,3}}(:{_H16}){{1,4}}", rf"({_H16}:){{1,2}}(:{_H16}){{1,5}}",
                  rf"{_H16}:(:{_H16}){{1,6}}", rf":((:{_H16}){{1,7}}|:)"))
_LABEL = r"(?![Xx][Nn]--)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_LAST_LABEL = rf"(?![0-9]+\.?([:/]|$)){_LABEL}"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
PEER_URL = (rf"^https?://({_IPV4}|\[({_IPV6})\]|({_LABEL}\.)*{_LAST_LABEL}\.?)(:{_PORT})?"
            r"(/[A-Za-z0-9._~-]+)*/?$")


class PeerAnnounce(BaseModel):
    model_config = {"regex_engine": "python-re"}      # PEER_URL looks ahead (the Rust engine cannot)
    url: str = Field(max_length=256, pattern=PEER_URL,
                     description="how to reach the peer: http(s)://host[:port][/path]: an IPv4 address, an IPv6 "
                                 "address in brackets or a DNS name (letters, digits, hyphens; the last label not "
                                 "all digits; no `xn--` labels), a port 1-65535; no credentials, query or fragment")
