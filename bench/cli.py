"""`polchain bench ...`: node/cli.py calls ``add_commands(subparsers)``.

Each benchmark is a module under bench/ with ``register(subparsers)``; adding
one is one line in BENCHMARKS.
"""
from __future__ import annotations

import importlib

BENCHMARKS = (
    "bench.mine",
    "bench.propagate",
    "bench.sync",
    "bench.verify",
    "bench.chain",
    "bench.memory",
    "bench.threads",
    "bench.evalspeed",
    "bench.step",
    "bench.orphans",
    "bench.simulate",
    "bench.give_way",
    "bench.labels",
    "bench.floor",
    "bench.hostile",
    "bench.ticket",
    "bench.epochs",
)


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks (mine, ...): tables or --json")
    sub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for name in BENCHMARKS:
        importlib.import_module(name).register(sub)
