"""Child process for the crash tests: submits pre-mined blocks to a datadir, and (optionally)
kills itself with SIGKILL at a chosen point of the write path.

    python -m tests.fault.crash_child DATADIR CHAINDIR [--crash-at N --when before|after]

Write points counted (in the order a block is stored): fsync of the post-state temp
file, its rename, the directory fsync, every SQLite transaction commit. ``--crash-at N``
sends SIGKILL to itself just before (or just after) the N-th such call; ``--crash-at -1``
counts the calls without crashing (``DONE calls=<n>``).

stdout protocol (line-buffered): ``READY`` once the chain is open, ``CRASH <call> <when>``
right before the self-kill, ``ACK <height> <hash>``
after each block the chain accepted (the node would now tell its peers), ``ERR <height>
<exception>`` when a submit raised (disk full), ``DONE`` at the end.
"""
from __future__ import annotations

from consensus.block import Block
import argparse
import os
import signal
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("datadir")
    ap.add_argument("chaindir")
    ap.add_argument("--crash-at", type=int, default=0)
    ap.add_argument("--when", choices=("before", "after"), default="before")
    ap.add_argument("--stop-after-errors", type=int, default=3)
    ap.add_argument("--dataset", help="safetensors cache of the tiny dataset (skips generating it)")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from consensus.data import load_dataset
    from node.chain import Chain
    from tests.chain_spec import TINY_TEST
    from tests.fault.chainfile import load

    spec = TINY_TEST
    if args.dataset:
        from safetensors.torch import load_file
        from consensus.data import Dataset
        t = load_file(args.dataset)
        dataset = Dataset(t["train_x"], t["train_y"], t["test_x"], t["test_y"])
    else:
        dataset = load_dataset(spec.dataset, None)
    blocks = load(Path(args.chaindir))
    calls = {"n": 0}

    def hook(fn, name):
        def wrapped(*a, **kw):
            calls["n"] += 1
            hit = calls["n"] == args.crash_at
            if hit:
                print(f"CRASH {name} {args.when}", flush=True)
            if hit and args.when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            out = fn(*a, **kw)
            if hit and args.when == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        wrapped.__name__ = name
        return wrapped

    chain = Chain(spec, Path(args.datadir), dataset)      # recovery happens here, unhooked
    if args.crash_at:
        from sqlalchemy.orm.session import SessionTransaction
        os.fsync = hook(os.fsync, "fsync")
        os.replace = hook(os.replace, "replace")
        SessionTransaction.commit = hook(SessionTransaction.commit, "commit")
    print("READY", flush=True)
    errors = 0
    for h, records in blocks:
        try:
            out = chain.submit(Block(h, records))
        except Exception as exc:  # noqa: BLE001 - disk full and friends: report, go on
            print(f"ERR {h.height} {type(exc).__name__}: {str(exc)[:200]}".replace("\n", " "), flush=True)
            errors += 1
            if errors >= args.stop_after_errors:
                break
            continue
        if out.status == "accepted" or out.status == "duplicate":
            print(f"ACK {h.height} {h.hash}", flush=True)
        else:
            print(f"REJ {h.height} {out.status} {out.code}", flush=True)
    print(f"DONE calls={calls['n']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
