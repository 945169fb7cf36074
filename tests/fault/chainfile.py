"""A pre-mined tiny chain on disk, shared by the fault tests and their child processes.

Layout of a chain directory: ``blocks.jsonl``, one block per line (heights 1..N) as
``{"header": ..., "records": [...]}`` -- a protocol v2 block is its header and records.
Blocks are mined by tests/blocks.py's ``BlockSmith`` with its fixed key, a seeded fast miner
and timestamps 2 s apart, so k stays at its initial value.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from consensus.block import Block, BlockHeader

INTERVAL_MS = 2000


def mine_chain(spec, dataset, out: Path, n: int, seed: int = 1) -> list[tuple[BlockHeader, list]]:
    from node.chain import Chain
    from tests.blocks import BlockSmith

    out = Path(out)
    scratch = out / "scratch-datadir"
    chain = Chain(spec, scratch, dataset)
    blocks = [(b.header, b.records)
              for b in BlockSmith(spec, dataset, seed=seed, gap_ms=INTERVAL_MS, chain=chain).mine(n)]
    chain.store.close()
    shutil.rmtree(scratch)
    save(out, blocks)
    return blocks


def save(out: Path, blocks) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "blocks.jsonl", "w") as f:
        for h, records in blocks:
            f.write(json.dumps({"header": h.to_dict(), "records": records}) + "\n")


def load(path: Path) -> list[tuple[BlockHeader, list]]:
    out = []
    for line in (Path(path) / "blocks.jsonl").read_text().splitlines():
        obj = json.loads(line)
        out.append((BlockHeader.from_dict(obj["header"]), obj["records"]))
    return out


def fill_datadir(spec, dataset, datadir: Path, blocks) -> None:
    """A node datadir (with spec.json) holding ``blocks``."""
    from node.chain import Chain

    chain = Chain(spec, datadir, dataset)
    for h, records in blocks:
        assert chain.submit(Block(h, records)).status == "accepted"
    chain.store.close()
    (Path(datadir) / "spec.json").write_text(spec.to_json())
