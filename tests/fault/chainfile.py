"""A pre-mined tiny chain on disk, shared by the fault tests and their child processes.

Layout of a chain directory: ``blocks.jsonl`` (one header per line, heights 1..N)
and ``<height>.safetensors`` (the body W of each block). Blocks are mined with a
fixed key, a seeded fast miner and timestamps 2 s apart, so k stays at its
initial value.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.block import BlockHeader

KEY = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
INTERVAL_MS = 2000


def mine_chain(spec, dataset, out: Path, n: int, seed: int = 1) -> list[tuple[BlockHeader, bytes]]:
    from consensus.difficulty import next_difficulty
    from miner.search import make_miner
    from miner.template import build_block
    from node.chain import Chain

    out = Path(out)
    scratch = out / "scratch-datadir"
    chain = Chain(spec, scratch, dataset)
    miner = make_miner("fast", spec, dataset, device="cpu", seed=seed)
    blocks = []
    for _ in range(n):
        tip, w = chain.tip_model()
        k = next_difficulty(spec, tip.header, chain.view)
        found = miner.mine(tip.header, k, w)
        header, body = build_block(spec, tip.header, k, found, KEY, chain.view,
                                   now_ms=tip.header.timestamp_ms + INTERVAL_MS)
        assert chain.submit(header, [], body).status == "accepted"
        blocks.append((header, body))
    chain.store.close()
    shutil.rmtree(scratch)
    save(out, blocks)
    return blocks


def save(out: Path, blocks) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "blocks.jsonl", "w") as f:
        for h, body in blocks:
            f.write(json.dumps(h.to_dict()) + "\n")
            (out / f"{h.height}.safetensors").write_bytes(body)


def load(path: Path) -> list[tuple[BlockHeader, bytes]]:
    path = Path(path)
    out = []
    for line in (path / "blocks.jsonl").read_text().splitlines():
        h = BlockHeader.from_dict(json.loads(line))
        out.append((h, (path / f"{h.height}.safetensors").read_bytes()))
    return out


def fill_datadir(spec, dataset, datadir: Path, blocks) -> None:
    """A node datadir (with spec.json) holding ``blocks``."""
    from node.chain import Chain

    chain = Chain(spec, datadir, dataset)
    for h, body in blocks:
        assert chain.submit(h, [], body).status == "accepted"
    chain.store.close()
    (Path(datadir) / "spec.json").write_text(spec.to_json())
