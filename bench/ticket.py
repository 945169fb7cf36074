"""polchain bench ticket: what the v4 admission ticket costs whom, per preset, in one run (issue 33.1).

For each preset, on this CPU:

* **check**: the node's cost to refuse a ticketless header (``validate_paid``: Ed25519 + one scrypt evaluation);
* **ticket**: a miner's (or spammer's) expected cost to make one ticket: 2^ticket_bits evaluations, from the
  measured cost of one (and, for presets of at most 10 bits, ``--solves`` tickets actually solved);
* **junk rejection**: the node's cost to reject a *ticketed* junk block (fresh key, parent = genesis, J + 1
  random nonces): the batch derivations and the replay of every step to R (``consensus.validation.check_work``),
  on the preset's model (ResNet-18 on generated images of CIFAR-10's shape: the arithmetic is the same);
* **honest overhead**: the ticket against a block's expected work, (a) at the preset's target interval: the
  work of one block once k has retargeted, for a lone miner of this CPU (more miners: a smaller share), and
  (b) at the preset's initial k, 2^k candidates at one exact step each (the reference miner's candidate; a
  fresh chain's first blocks, before the first retarget).

Goals: ticket / junk rejection >= 1 (a junk block costs its sender at least what it costs the node);
honest overhead at the target <= 5 %; 10,000 headers checked in seconds (check x 10,000).
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import time

from node.argtypes import nonneg_int, positive_int

from . import common


def register(sub) -> None:
    p = sub.add_parser("ticket", help="admission ticket: its price, its check, junk rejection and honest overhead",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "cifar10-resnet18"])
    p.add_argument("--checks", type=positive_int, default=300, help="ticketless headers refused per preset")
    p.add_argument("--solves", type=nonneg_int, default=8, help="tickets solved per preset of at most 10 bits")
    p.add_argument("--junk", type=positive_int, default=3, help="ticketed junk blocks rejected per preset")
    p.add_argument("--threads", type=positive_int, default=1)
    common.add_output_arguments(p)
    p.set_defaults(func=run)


def measure(name: str, args) -> dict:
    import torch

    from bench.give_way import junk_block
    from consensus import errors
    from consensus.block import genesis_header
    from consensus.data import make_synthetic
    from consensus.spec import preset
    from consensus.ticket import puzzle_input, solve_ticket, ticket_hash, ticket_holds
    from consensus.training import Replayer, genesis_state
    from consensus.validation import check_work, validate_paid

    tiny = preset("tiny").dataset
    # generated images of CIFAR-10's shape (the arithmetic is the same; the chain id is another one)
    spec = dataclasses.replace(preset(name), dataset=tiny)
    data = make_synthetic(tiny.seed, tiny.train_size, tiny.test_size)
    g = genesis_header(spec)
    rng = random.Random(0)
    # check: ticketless junk refused (the ticket of a random header holds with probability 2^-bits)
    unpaid = []
    while len(unpaid) < args.checks:
        b = junk_block(spec, g, rng, ticketed=False)
        if not ticket_holds(spec, b.header):
            unpaid.append(b.header)
    c0 = time.process_time()
    for h in unpaid:
        try:
            validate_paid(h, spec)
        except errors.BadTicket:
            pass
    check_s = (time.process_time() - c0) / len(unpaid)
    puzzle = puzzle_input(unpaid[0])
    c0 = time.process_time()
    for t in range(args.checks):
        ticket_hash(spec, puzzle, t)
    eval_s = (time.process_time() - c0) / args.checks
    bits = spec.proof.ticket_bits
    ticket_s = eval_s * 2 ** bits
    solved = []
    if bits <= 10:
        for h in unpaid[: args.solves]:
            c0 = time.process_time()
            solve_ticket(spec, h)
            solved.append(time.process_time() - c0)
    # junk rejection: ticketed junk replayed to R
    torch.set_num_threads(args.threads)
    r = Replayer(spec, data)
    state = genesis_state(spec)
    junk_s = []
    for _ in range(args.junk):
        b = junk_block(spec, g, rng)
        c0 = time.process_time()
        try:
            check_work(b, g, state, r, spec)
        except errors.InvalidBlock:
            pass
        junk_s.append(time.process_time() - c0)
    junk = sum(junk_s) / len(junk_s)
    step_s = junk / (spec.proof.max_advance_steps + 1)
    k = spec.difficulty.initial
    block_work_s = step_s * 2 ** k
    return dict(preset=name, ticket_bits=bits, ticket_work=spec.proof.ticket_work, eval_ms=round(eval_s * 1e3, 3),
                check_ms=round(check_s * 1e3, 3), ticket_s=round(ticket_s, 3),
                solved_mean_s=round(sum(solved) / len(solved), 3) if solved else None, solved=len(solved),
                junk_rejection_s=round(junk, 3), exact_step_s=round(step_s, 4), k=k,
                block_work_s=round(block_work_s, 1), ticket_over_junk=round(ticket_s / junk, 2),
                target_s=spec.difficulty.target_interval_ms / 1000,
                overhead_at_target_pct=round(100 * ticket_s / (spec.difficulty.target_interval_ms / 1000), 2),
                honest_overhead_pct=round(100 * ticket_s / block_work_s, 2),
                check_10k_headers_s=round(check_s * 10_000, 1))


def run(args) -> int:
    rows = [measure(name, args) for name in args.presets]
    result = common.result_header("ticket", machine=common.machine_info("cpu"), threads=args.threads, rows=rows,
                                  load_average=common.load_average())
    return common.emit(result, args, table, name="ticket")


def table(res: dict) -> str:
    head = ("preset", "bits", "eval ms", "check ms", "ticket s", "solved s (n)", "junk rejection s",
            "ticket/junk", "target s", "overhead %", "initial k", "block work s", "overhead %", "10k headers s")
    rows = [(r["preset"], r["ticket_bits"], r["eval_ms"], r["check_ms"], r["ticket_s"],
             f"{r['solved_mean_s']} ({r['solved']})" if r["solved"] else "-", r["junk_rejection_s"],
             r["ticket_over_junk"], r["target_s"], r["overhead_at_target_pct"], r["k"], r["block_work_s"],
             r["honest_overhead_pct"], r["check_10k_headers_s"])
            for r in res["rows"]]
    return "\n".join([
        f"polchain bench ticket: scrypt N = 2^ticket_work, r = 8; junk replayed on {res['threads']} thread(s); "
        "block work = 2^k candidates x one exact step (the reference miner's candidate)",
        common.format_table(head, rows),
        f"machine: {common.machine_line(res['machine'])}",
    ])
