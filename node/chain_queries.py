"""The chain's read side, as the REST API and the explorer serve it (node/api routes call these)."""
from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Mapping

from consensus.errors import BlockStatus
from consensus.records import Record
from consensus.validation import batches
from consensus.weights import State

from .chain import Chain
from .store import StoredBlock

if TYPE_CHECKING:
    from torch import Tensor

MAX_TIPS = 100      # /tips lists at most this many


class TipStatus(StrEnum):
    """A tip as /tips lists it (getchaintips' words)."""
    ACTIVE = "active"              # the best chain's tip
    VALID_FORK = "valid-fork"      # a valid branch with less work
    HEADERS_ONLY = "headers-only"  # a branch of headers whose bodies are not judged yet
    INVALID = "invalid"            # a branch that ends in an invalid block


TIP_STATUS = {BlockStatus.VALID: TipStatus.VALID_FORK, BlockStatus.HEADER_ONLY: TipStatus.HEADERS_ONLY}


class ChainQueries:
    """Owns the chain's read side for the API: a block by height or hash (the in-flight one served as
    ``validating``) and its JSON form, a page of the best chain, the known tips, a post-state's file,
    the certificates of a model, the tip model, blocks by hash prefix."""

    def __init__(self, chain: Chain, validation_seconds: Mapping[str, float],
                 pending: Callable[[], list[Record]] = list):
        self.chain, self.store, self.spec = chain, chain.store, chain.spec
        self.validation_seconds = validation_seconds     # block hash -> seconds this node took to check it
        self.pending = pending                           # the mempool's records not yet on the best chain

    def block(self, ident: int | str) -> StoredBlock | None:
        """The best chain's block at a height (an int), or a block of any branch by hash. A block whose work
        this node has checked and is relaying while it evaluates the accuracy (fast relay) is served with
        status ``validating``; looked up first: the chain drops it from there only once its verdict is stored."""
        if isinstance(ident, int):
            h = self.store.hash_at(ident)
            return self.store.get(h) if h else None
        return self.chain.in_flight(ident) or self.store.get(ident)

    def block_out(self, b: StoredBlock) -> dict:
        """A block as ``GET /blocks/{ident}`` serves it (schemas.BlockOut)."""
        return {
            "hash": b.hash, "height": b.height, "status": b.status, "reason": b.reason,
            "header": b.header.to_dict(), "records": b.records,
            "accuracy": {"claimed_after": b.header.acc_after, "measured_after": b.acc_after,
                         "of": self.spec.evaluation.size},
            "cumulative_work": b.cumulative_work, "received_at": b.received_at, "peer": b.peer,
            "in_best_chain": self.store.hash_at(b.height) == b.hash,
            "validation_seconds": self.validation_seconds.get(b.hash),
        }

    def blocks(self, start: int | None, limit: int, order: Literal["asc", "desc"]) -> dict:
        """A page of the best chain from height ``start`` (default: genesis for asc, the tip for desc), oldest
        or newest first, and where the next page starts (None at the end) (schemas.BlockList)."""
        if order == "asc":
            blocks = self.store.best_range(start or 0, limit)
            nxt = blocks[-1].height + 1 if len(blocks) == limit else None
        else:
            tip = self.chain.tip().height
            top = tip if start is None else min(start, tip)
            low = max(0, top - limit + 1)
            blocks = list(reversed(self.store.best_range(low, top - low + 1)))
            nxt = blocks[-1].height - 1 if blocks and blocks[-1].height > 0 else None
        return {"blocks": [self.block_out(b) for b in blocks], "next_start": nxt}

    def tips(self, depth: int) -> list[dict]:
        """The known tips, the active one first, then by work (at most ``MAX_TIPS``); a branch whose tip lies
        more than ``depth`` blocks below the active tip is left out (0: none is) (schemas.TipOut)."""
        tip = self.chain.tip()
        out = [{"hash": tip.hash, "height": tip.height, "status": TipStatus.ACTIVE,
                "cumulative_work": tip.cumulative_work}]
        low = tip.height - depth if depth else None
        for b in self.store.leaves(limit=MAX_TIPS):
            if b.hash == tip.hash or (low is not None and b.height < low):
                continue
            out.append({"hash": b.hash, "height": b.height, "status": TIP_STATUS.get(b.status, TipStatus.INVALID),
                        "cumulative_work": b.cumulative_work})
        return out[:MAX_TIPS]

    def state_file(self, b: StoredBlock) -> Path | None:
        """The file of ``b``'s post-state W' (safetensors), if ``b`` is valid and its W' is kept here."""
        if b.status != BlockStatus.VALID:
            return None
        path = self.store.weights.path(b.header.state_hash)
        return path if path.exists() else None

    def certificates(self, model_hash: str) -> dict | None:
        """A model's certificates on the best chain (the first is the original registration) and in the
        mempool; None when it has none (schemas.CertificateList)."""
        certs = self.store.certificates_for(model_hash)
        pending = [r.body for r in self.pending() if r.body.get("model_hash") == model_hash]
        if not certs and not pending:
            return None
        return {"model_hash": model_hash, "certificates": certs, "pending": pending}

    def same_claim(self, body: dict) -> dict | None:
        """A certificate on the best chain or pending for the same model, owner and proof as ``body``."""
        key = (body.get("owner"), body.get("proof_root"))
        known = self.store.certificates_for(body["model_hash"])
        known += [{"record": r.body, "id": r.id} for r in self.pending() if r.body.get("model_hash") == body["model_hash"]]
        return next((c for c in known if (c["record"].get("owner"), c["record"].get("proof_root")) == key), None)

    def tip_model(self) -> tuple[StoredBlock, State]:
        """The tip block and its post-state W' (``Chain.tip_model``); LookupError when W' is not kept."""
        return self.chain.tip_model()

    def with_prefix(self, prefix: str, limit: int) -> list[StoredBlock]:
        """Blocks whose hash starts with ``prefix`` (lowercase hex), at most ``limit``, in hash order; a full
        hash of the block in flight is that block (``validating``)."""
        if len(prefix) == 64 and (b := self.chain.in_flight(prefix)) is not None:
            return [b]
        return [b for h in self.store.hashes_with_prefix(prefix, limit) if (b := self.store.get(h)) is not None]

    def batch_images(self, b: StoredBlock, step: int) -> tuple[int, Tensor | None]:
        """How many steps ``b``'s proof has, and the train images of its step ``step`` (N x C x H x W uint8, the
        batch's order; None when it has no such step)."""
        parent = self.store.get(b.header.parent) if b.height > 0 else None
        steps = batches(b.header, parent.header, self.spec) if parent is not None else []
        if step >= len(steps):
            return len(steps), None
        import torch
        return len(steps), self.chain.dataset.train_x[torch.as_tensor(steps[step], dtype=torch.int64)]
