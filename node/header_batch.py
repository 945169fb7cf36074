"""Headers (headers-first sync) and snapshot blocks (assume-valid) checked as a batch, each against the
store and the batch's earlier headers, before one transaction stores the good ones."""
from __future__ import annotations

from consensus import errors
from consensus.block import Block, BlockHeader
from consensus.difficulty import work
from consensus.errors import Stage, Verdict
from consensus.spec import ChainSpec
from consensus.validation import check_header_and_records, judged_at, validate_header

from .outcome import Outcome
from .store import INVALID, VALID, Store
from .store_view import BatchView, StoreView

Row = tuple[BlockHeader, "list | None", int]     # (header, records or None, cumulative work)


def check_batch(items: list[BlockHeader] | list[Block], spec: ChainSpec, view: StoreView, store: Store,
                now_ms: int) -> tuple[list[Outcome], list[Row], tuple[Block, errors.BlockError] | None]:
    """The header rules on each header, in order (a block's records too: the pipeline without the proof).
    Returns the outcomes of the items looked at, the rows to store, and the first item that failed with
    its error (the items after it are not looked at; a duplicate of an invalid block also ends it)."""
    batch = BatchView(view)
    works: dict[str, int] = {}
    good: list[Row] = []
    outs: list[Outcome] = []
    stored = store.statuses([item.hash for item in items])
    for item in items:
        block = item if isinstance(item, Block) else Block(item)
        header, h = block.header, item.hash
        known = stored.get(h)
        if known in (VALID, INVALID) or h in works:
            outs.append(Outcome(Verdict.DUPLICATE, errors.Duplicate.code, f"already {known or 'in this batch'}", h))
            if known == INVALID:
                break
            batch.add(header)
            continue
        try:
            if isinstance(item, Block):
                parent = check_header_and_records(block, spec, batch, now_ms)
            else:
                with judged_at(Stage.HEADER):
                    parent = validate_header(header, spec, batch, now_ms)
        except errors.BlockError as exc:
            return outs, good, (block, exc)
        base = works.get(parent.hash)
        works[h] = (base if base is not None else store.get(parent.hash).cumulative_work) + work(header.difficulty)
        batch.add(header)
        if isinstance(item, Block):
            good.append((header, block.wire_records, works[h]))
            outs.append(Outcome(Verdict.ACCEPTED, "", "assumed valid", h))
        else:
            if known is None:
                good.append((header, None, works[h]))
            outs.append(Outcome(Verdict.HEADER_OK, "", "", h))
    return outs, good, None
