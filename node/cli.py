"""The `polchain` command line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from consensus.spec import PRESETS, preset


def _env(name: str, default=None):
    return os.environ.get(f"POLCHAIN_{name}", default)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# -- spec -------------------------------------------------------------------------
def cmd_spec(args) -> int:
    text = preset(args.preset).to_json()
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output} (chain id {preset(args.preset).chain_id})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


# -- mine (solo, no network) -------------------------------------------------------
def cmd_mine(args) -> int:
    from miner.search import make_miner
    from node.chain import StartupError
    from node.keys import load_or_create_key
    from node.mining import mine_on_tip
    from node.setup import open_chain, resolve_spec

    try:
        spec = resolve_spec(Path(args.datadir), args.preset, args.spec)
        chain = open_chain(Path(args.datadir), spec, data_dir=args.data_dir, archival=True)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    key = load_or_create_key(Path(args.key) if args.key else Path(args.datadir) / "node.key")
    miner = make_miner(args.miner, spec, chain.dataset, device=args.device, seed=args.seed)
    start = chain.tip().height
    print(f"mining {args.blocks} blocks on {spec.name} (chain {spec.chain_id[:16]}) from height {start}, "
          f"miner={args.miner} device={miner.device}", file=sys.stderr)
    for _ in range(args.blocks):
        header, records, found = mine_on_tip(chain, miner, key)
        out = chain.submit(header, records, peer=None)
        if out.status != "accepted":
            print(f"error: own block rejected: {out.code} {out.detail}", file=sys.stderr)
            return 1
        print(f"block {header.height} {header.hash[:16]} k={header.difficulty} attempts={found.attempts} "
              f"{found.seconds:.2f}s steps={len(found.nonces)} acc {found.acc_after.correct}"
              f"/{spec.evaluation.size}", file=sys.stderr)
    tip = chain.tip()
    print(json.dumps({"height": tip.height, "tip": tip.hash, "cumulative_work": tip.cumulative_work}))
    return 0


# -- verify --------------------------------------------------------------------------
def cmd_verify(args) -> int:
    from node.chain import StartupError
    from node.setup import open_chain, resolve_spec
    from node.verify import verify_chain

    try:
        spec = resolve_spec(Path(args.datadir))
        chain = open_chain(Path(args.datadir), spec, data_dir=args.data_dir)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def progress(h, n):
        if h % 10 == 0 or h == n:
            print(f"verified {h}/{n}", file=sys.stderr)

    rep = verify_chain(chain, progress=progress)
    if rep.ok:
        print(f"OK: {rep.verified} blocks replayed from genesis in {rep.seconds:.1f}s; tip {rep.tip[:16]} "
              f"height {rep.height}; tip model accuracy {rep.final_accuracy}/{spec.evaluation.size} on E")
        return 0
    print(f"FAIL: block {rep.bad_height} ({rep.bad_hash}) {rep.code}: {rep.detail}")
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="polchain", description="A proof-of-learning (DGG) blockchain node")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("spec", help="print a preset chain spec (genesis document)")
    s.add_argument("--preset", choices=PRESETS, default="tiny")
    s.add_argument("-o", "--output")
    s.set_defaults(func=cmd_spec)

    s = sub.add_parser("mine", help="mine N blocks solo (no network) into a datadir")
    s.add_argument("--preset", choices=PRESETS)
    s.add_argument("--spec", type=Path)
    s.add_argument("--blocks", type=int, default=1)
    s.add_argument("--datadir", required=True)
    s.add_argument("--data-dir", type=Path, default=None, help="dataset cache (default DATADIR/data)")
    s.add_argument("--key")
    s.add_argument("--device", default="cpu")
    s.add_argument("--miner", choices=("fast", "reference"), default="fast")
    s.add_argument("--seed", type=int, default=None)
    s.set_defaults(func=cmd_mine)

    s = sub.add_parser("verify", help="replay every stored block from genesis")
    s.add_argument("--datadir", required=True)
    s.add_argument("--data-dir", type=Path, default=None)
    s.set_defaults(func=cmd_verify)

    import importlib
    for mod in ("node.cli_node", "node.cli_testnet", "bench.cli", "pol.cli"):
        importlib.import_module(mod).add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
