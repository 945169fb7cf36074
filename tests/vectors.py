"""Known answers of protocol v4, committed in ``tests/known-answers-v4.json``.

For each case: the genesis weights hash, the genesis block's hash and the genesis model's correct count
on E (the genesis block's claim, pinned in the spec); for a fixed miner key, the genesis block as parent
and nonces 0..J in redraw epoch 0, the post-state hash after the first step and after all J+1 steps (a
block's full replay), the correct count of that W' on E (fp32 evaluation: other machines may differ by
the claim tolerance, nothing else may differ at all), and the admission ticket of block 1 with those
nonces (``--write`` solves it; the test checks the committed one with one evaluation). An independent implementation, a GPU, another
CPU or another torch version must reproduce every hash to the bit.

Cases:
* ``tiny``: the tiny preset as it is (its synthetic data is part of the spec).
* ``resnet18-synthetic``: the cifar10-resnet18 preset's model and training rule on the tiny
  preset's synthetic data (the full CIFAR-10 archive is not needed to check the arithmetic; the
  data only selects the images).

``python -m tests.vectors`` prints the answers computed here; ``--write`` rewrites the file (only
when the protocol changes, with the new chain ids). ``--case NAME --device cuda`` computes one case
on a device and compares it (scripts/gpu-check.sh).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

VECTORS = Path(__file__).with_name("known-answers-v4.json")
MINER_KEY = hashlib.sha256(b"polchain known-answer miner").hexdigest()   # 32 bytes, as a public key in hex


def case_spec(name: str):
    from consensus.spec import preset
    if name == "tiny":
        return preset("tiny")
    if name == "resnet18-synthetic":
        return dataclasses.replace(preset("cifar10-resnet18"), name="resnet18-synthetic",
                                   dataset=preset("tiny").dataset)
    raise ValueError(f"unknown case {name!r}")


CASES = ("tiny", "resnet18-synthetic")


def compute(name: str, device: str = "cpu", *, steps: int | None = None, evaluate: bool = True,
            dataset=None) -> dict:
    """The known answers of one case, computed here (``steps``: fewer than J+1 for a quick check)."""
    from consensus.block import genesis_header
    from consensus.data import load_dataset
    from consensus.proof import derive_batch
    from consensus.training import canonical_step, genesis_state
    from consensus.weights import weights_hash

    spec = case_spec(name)
    data = dataset if dataset is not None else load_dataset(spec.dataset, None)
    parent = genesis_header(spec)
    j = spec.proof.max_advance_steps
    n = j + 1 if steps is None else steps
    nonces = list(range(n))
    step = canonical_step(spec, data, device)
    w0 = genesis_state(spec)
    step.load(w0)
    out = {"chain_id": spec.chain_id, "genesis": weights_hash(w0), "miner": MINER_KEY, "parent": parent.hash,
           "nonces": nonces, "batches": [list(derive_batch(spec, parent.hash, MINER_KEY, 0, x)) for x in nonces]}
    t0 = time.perf_counter()
    for i, batch in enumerate(out["batches"]):
        step.step(batch)
        if i == 0:
            out["after_1"] = weights_hash(step.state())
    out["after_all"] = weights_hash(step.state())
    out["step_seconds"] = round((time.perf_counter() - t0) / n, 4)
    if evaluate:
        out["correct_on_E"] = step.accuracy().correct
        out["genesis_correct_on_E"] = step.accuracy(w0).correct
    return out


def block_one(name: str, after_all: str):
    """Block 1 of the case (unsigned: a ticket needs no private key), ticket 0."""
    from consensus.block import BlockHeader, genesis_header
    from consensus.hashing import ZERO_HASH

    spec = case_spec(name)
    g = genesis_header(spec)
    return spec, BlockHeader(version=spec.header_version, chain_id=spec.chain_id, height=1, parent=g.hash,
                             timestamp_ms=g.timestamp_ms + 2000, difficulty=spec.difficulty.initial, miner=MINER_KEY,
                             nonces=tuple(range(spec.proof.max_advance_steps + 1)), state_hash=after_all,
                             acc_after=0, records_root=ZERO_HASH)


def solve_ticket_answer(name: str, after_all: str) -> dict:
    from consensus.ticket import puzzle_input, solve_ticket, ticket_hash

    spec, header = block_one(name, after_all)
    ticket = solve_ticket(spec, header).ticket
    return {"bits": spec.proof.ticket_bits, "ticket": ticket,
            "hash": ticket_hash(spec, puzzle_input(header), ticket).hex()}


def load() -> dict:
    return json.loads(VECTORS.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.vectors", description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=CASES, action="append")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--write", action="store_true", help="rewrite tests/known-answers-v4.json")
    args = ap.parse_args(argv)
    cases = args.case or list(CASES)
    got = {c: compute(c, args.device) for c in cases}
    if args.write:
        for c in cases:
            got[c]["ticket"] = solve_ticket_answer(c, got[c]["after_all"])
        VECTORS.write_text(json.dumps({c: {k: v for k, v in got[c].items() if k != "step_seconds"} for c in cases},
                                      indent=1) + "\n")
        print(f"wrote {VECTORS}")
        return 0
    want = load()
    ok = True
    for c in cases:
        for key in ("genesis", "after_1", "after_all"):
            same = got[c][key] == want[c][key]
            ok &= same
            print(f"{c:20s} {key:10s} {got[c][key][:16]}  {'OK' if same else 'MISMATCH, want ' + want[c][key][:16]}")
        print(f"{c:20s} correct_on_E {got[c]['correct_on_E']} (committed {want[c]['correct_on_E']}); "
              f"{got[c]['step_seconds']} s per step on {args.device}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
