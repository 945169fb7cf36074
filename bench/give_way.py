"""`polchain bench give-way`: how long a known sender's block waits behind a junk replay (issue 19).

A junk block (a fresh key, a valid signature, parent = the tip, random nonces) costs its sender one
signature and a validator J+1 canonical steps before R fails. The validator thread serves one block at
a time; a known sender's block that arrives while a stranger's replay runs waits for it. With the
give-way rule (``Chain.submit(should_stop=...)``) the replay stops before its next step once a known block waits.

On a fresh ``node.chain.Chain`` (temp datadir, the preset's spec; generated data for ResNet-18 unless
CIFAR-10 is in ``--data-dir``), ``--runs`` times, each with a new junk block on genesis:

* ``full``: the junk block judged in full (``Chain.submit``: invalid, requirements-not-met), timed;
* ``gave way``: the same kind of block submitted with ``should_stop`` tied to an event that another thread
  sets at a uniformly random moment of the replay (within the previous ``full`` time). Measured: the
  time from the event to ``Chain.submit`` returning ``busy`` (what the known block waits now), and the
  rest of the full replay from that moment (what it waited before the rule).

Also the sender's cost of one junk block (a key, a header, a signature). One process, one torch
thread by default; figures are medians.
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from consensus import errors
from node.argtypes import nonneg_int, positive_int
from node.threads import threads_arg

from . import common


def register(sub) -> None:
    p = sub.add_parser("give-way", help="a known block's wait behind a junk replay, with and without the give-way rule",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--runs", type=positive_int, default=None,
                   help="junk blocks of each kind (default 20 tiny, 5 others)")
    p.add_argument("--threads", type=threads_arg, default=1, help="torch threads (default 1)")
    p.add_argument("--data-dir", type=Path, default=None, help="CIFAR-10 here, if present (never downloaded)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    common.add_output_arguments(p)
    p.set_defaults(func=run)


def junk_block(spec, parent, rng: random.Random, *, ticketed: bool = True):
    """A junk block on ``parent``: fresh key, valid signature, random nonces and state hash; with a valid
    admission ticket unless ``ticketed`` is false (protocol v4: ticketless junk is refused before any lane)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from consensus.block import Block, BlockHeader, public_key_hex
    from consensus.ticket import sign_with_ticket
    key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    header = BlockHeader(version=parent.version, chain_id=parent.chain_id, height=parent.height + 1,
                         parent=parent.hash, timestamp_ms=parent.timestamp_ms + 2000, difficulty=parent.difficulty,
                         miner=public_key_hex(key),
                         nonces=tuple(rng.getrandbits(64) for _ in range(spec.proof.max_advance_steps + 1)),
                         state_hash=rng.randbytes(32).hex(), acc_after=parent.acc_after,
                         records_root=parent.records_root)
    return Block(sign_with_ticket(spec, header, key) if ticketed else header.signed(key), ())


def run(args) -> int:
    import logging

    import torch

    from consensus.spec import preset
    from node.chain import Chain
    logging.getLogger("polchain.chain").setLevel(logging.ERROR)     # one "rejected block" line per junk block
    spec = preset(args.preset)
    data, note = common.bench_dataset(spec, args.data_dir)
    runs = args.runs or (20 if spec.model.arch == "tiny-cnn" else 5)
    rng = random.Random(args.seed)
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="polchain-give-way-"))
    chain = Chain(spec, root / "chain", data)
    try:
        parent = chain.tip().header
        t0 = time.perf_counter()
        for _ in range(20):              # each pays its admission ticket (v4)
            junk_block(spec, parent, rng)
        sender_s = (time.perf_counter() - t0) / 20
        chain.submit(junk_block(spec, parent, rng))                       # warm-up (untimed)
        full, waits, rest, steps_done = [], [], [], []
        for i in range(runs):
            t0 = time.perf_counter()
            out = chain.submit(junk_block(spec, parent, rng))
            full.append(time.perf_counter() - t0)
            assert out.code == "requirements-not-met", out
            at = rng.uniform(0, full[-1])
            event, set_at = threading.Event(), []

            def trip():
                time.sleep(at)
                set_at.append(time.perf_counter())
                event.set()

            ran = []            # steps the replay ran: should_stop said no before each

            def should_stop() -> bool:
                if event.is_set():
                    return True
                ran.append(1)
                return False

            timer = threading.Thread(target=trip, daemon=True)
            start = time.perf_counter()
            timer.start()
            out = chain.submit(junk_block(spec, parent, rng), should_stop=should_stop)
            done = time.perf_counter()
            timer.join()
            if out.code != errors.ReplayStopped.code:            # the replay ended before the event: nothing waited on it
                continue
            waits.append(done - set_at[0])
            rest.append(max(0.0, full[-1] - (set_at[0] - start)))
            steps_done.append(len(ran))
            common.progress(f"run {i + 1}/{runs}: full replay {full[-1]:.3f} s; event at {at:.3f} s: waited "
                            f"{waits[-1]:.3f} s (the rest of the replay: {rest[-1]:.3f} s)")
        result = common.result_header(
            "give-way", preset=spec.name, data=note, machine=common.machine_info("cpu"), threads=args.threads,
            runs=runs, steps_per_junk_block=spec.proof.max_advance_steps + 1,
            sender_s_per_junk_block=round(sender_s, 6), junk_replay_s=common.summary(full),
            wait_with_give_way_s=common.summary(waits) if waits else None,
            wait_without_s=common.summary(rest) if rest else None,
            gave_way=len(waits), steps_done_before_giving_way=steps_done,
            node_over_sender=round(statistics.median(full) / sender_s, 2) if sender_s else None,
            load_average=common.load_average())
    finally:
        chain.store.close()
        shutil.rmtree(root, ignore_errors=True)
        torch.set_num_threads(before)
    return common.emit(result, args, table, name=f"give-way-{spec.name}")


def table(res: dict) -> str:
    med = lambda k: res[k]["median"] if res[k] else None   # noqa: E731
    rows = [(res["preset"], res["threads"], res["steps_per_junk_block"], med("junk_replay_s"), res["gave_way"],
             med("wait_without_s"), med("wait_with_give_way_s"), res["sender_s_per_junk_block"] * 1000,
             f"{res['node_over_sender']}x")]
    return "\n".join([
        "polchain bench give-way: a known block's wait behind a stranger's junk replay (medians, seconds)",
        f"machine: {common.machine_line(res['machine'])}", f"data: {res['data']}", "",
        common.format_table(["preset", "threads", "steps", "junk replay s", "gave way", "wait before s",
                             "wait now s", "sender ms", "node/sender"], rows), "",
        "wait before: the rest of the junk replay from the moment the known block arrived; wait now: from that "
        "moment to the replay giving way (at most one step).",
    ])
