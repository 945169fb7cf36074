"""argparse subcommands: `pol verify PROOF_DIR [--queries Q] [--json]` and `pol demo --out DIR`.

The project CLI calls add_commands(subparsers) and then args.func(args) -> exit code.
`pol verify` rebuilds the model and dataset from the ids in the manifest; only the
demo ids ("demo-mlp", "demo-data") are known here. Other models are verified from
Python: pol.verify_proof(proof_dir, model_factory, (inputs, targets)).
Standalone: python -m pol.cli verify DIR.
"""
from __future__ import annotations

import argparse
import json
import sys


# (model_id, dataset_id) -> (model factory, dataset builder), imported lazily
KNOWN = {("demo-mlp", "demo-data"): ("pol.demo", "demo_model", "demo_dataset")}


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError("must be non-negative")
    return v


def _verify(proof_dir, queries, command: str):
    """The verifier's report for a proof the CLI can rebuild, or None (after saying why)."""
    import importlib

    from . import proof as P   # torch: only when a command runs, not for --help
    from .verifier import verify_proof

    key = ("demo-mlp", "demo-data")  # if the manifest is unreadable, verify_proof reports why
    try:
        m = P.load_manifest(proof_dir)
        key = (m.model_id, m.dataset_id)
    except P.ProofError:
        pass
    if key not in KNOWN:
        print(f"{command}: unknown model/dataset ids {key[0]!r}/{key[1]!r}; the CLI only rebuilds "
              f"{sorted(KNOWN)}. Verify other models in Python with pol.verify_proof().", file=sys.stderr)
        return None
    mod, model_fn, data_fn = KNOWN[key]
    mod = importlib.import_module(mod)
    return verify_proof(proof_dir, getattr(mod, model_fn), getattr(mod, data_fn)(), queries_per_epoch=queries)


def cmd_verify(args) -> int:
    report = _verify(args.proof_dir, args.queries, "pol verify")
    if report is None:
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(report.format())
    return 0 if report.passed else 1


def cmd_demo(args) -> int:
    from . import proof as P   # torch: only when a command runs, not for --help
    from .demo import run_demo

    try:
        out = run_demo(args.out, steps=args.steps, checkpoint_every=args.every, seed=args.seed)
    except (FileExistsError, ValueError) as e:
        print(f"pol demo: {e}", file=sys.stderr)
        return 1
    summary = P.proof_summary(out)
    print(f"proof written to {out}")
    for k in ("steps", "merkle_root", "model_hash", "dataset_hash"):
        print(f"  {k}: {summary[k]}")
    return 0


def cmd_register(args) -> int:
    """Verify a proof (as `pol verify` does), sign a model certificate for it and submit it to a node,
    once: when the node already has this owner's certificate for this proof and model, say so."""
    from . import proof as P   # torch: only when a command runs, not for --help
    import time
    from pathlib import Path

    import httpx

    from consensus.block import public_key_hex
    from consensus.certificates import make_certificate
    from consensus.records import parse_record
    from node.keys import open_key

    existed = Path(args.key).exists()
    try:   # first: a mistyped --key is an error (it used to register under a new key), before any work
        key = open_key(Path(args.key), create=args.create_key)
    except ValueError as e:
        print(f"pol register: error: {e}", file=sys.stderr)
        return 2
    if not existed:
        print(f"pol register: created key {args.key} (public key {public_key_hex(key)})", file=sys.stderr)
    try:
        summary = P.proof_summary(args.proof_dir)
    except P.ProofError as e:
        print(f"pol register: the proof does not check out: {e}", file=sys.stderr)
        return 1
    if not args.no_verify:
        report = _verify(args.proof_dir, args.queries, "pol register")
        if report is None:
            print("pol register: pass --no-verify to register a proof the CLI cannot check", file=sys.stderr)
            return 2
        if not report.passed:
            print(f"pol register: `pol verify` rejects this proof ({', '.join(report.reasons) or 'failed'}); "
                  "nothing registered", file=sys.stderr)
            return 1
    meta = {"steps": str(summary["steps"]), "dataset_hash": summary["dataset_hash"]}
    for item in args.meta or []:
        k, sep, v = item.partition("=")
        if not sep:
            print(f"pol register: --meta wants KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        meta[k] = v
    node = args.node.rstrip("/")
    try:
        known = httpx.get(f"{node}/certificates/{summary['model_hash']}", timeout=10)
        mine = []
        if known.status_code == 200:
            body = known.json()
            mine = [c["id"] for c in body.get("certificates", []) if _same(c["record"], key, summary)]
            mine += [parse_record(rec).id for rec in body.get("pending", []) if _same(rec, key, summary)]
        if mine:
            print(json.dumps({"id": mine[0], "model_hash": summary["model_hash"], "proof_root": summary["merkle_root"],
                              "owner": public_key_hex(key), "node_status": "already-registered"}))
            return 0
        cert = make_certificate(key, summary["model_hash"], summary["merkle_root"], meta, int(time.time() * 1000))
        r = httpx.post(f"{node}/certificates", json=cert.body, timeout=10)
    except (httpx.HTTPError, ValueError) as e:
        print(f"pol register: cannot reach {args.node}: {e}", file=sys.stderr)
        return 1
    if r.status_code == 409 and r.json().get("error") == "duplicate":
        print(json.dumps({"id": r.json().get("id"), "model_hash": summary["model_hash"],
                          "proof_root": summary["merkle_root"], "owner": cert.body["owner"],
                          "node_status": "already-registered"}))
        return 0
    if r.status_code >= 300:
        print(f"pol register: node refused the certificate: HTTP {r.status_code} {r.text}", file=sys.stderr)
        return 1
    print(json.dumps({"id": cert.id, "model_hash": summary["model_hash"], "proof_root": summary["merkle_root"],
                      "owner": cert.body["owner"], "node_status": r.json().get("status")}))
    return 0


def _same(record: dict, key, summary: dict) -> bool:
    from consensus.block import public_key_hex
    return record.get("owner") == public_key_hex(key) and record.get("proof_root") == summary["merkle_root"]


def _add_pol_subcommands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pol_command", metavar="{verify,demo,register}")
    v = sub.add_parser("verify", help="verify a proof-of-learning directory",
                       description="Verify a proof of learning (the CLI knows the demo model/data; "
                                   "other models: pol.verify_proof in Python).")
    v.add_argument("proof_dir")
    v.add_argument("--queries", type=_positive_int, default=None, metavar="Q",
                   help="replay the Q largest updates per epoch (default: every segment)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=cmd_verify)
    d = sub.add_parser("demo", help="train the demo MLP and record a proof")
    d.add_argument("--out", required=True, help="proof directory to create")
    d.add_argument("--steps", type=_positive_int, default=96)
    d.add_argument("--every", type=_positive_int, default=8, help="checkpoint interval k")
    d.add_argument("--seed", type=_nonneg_int, default=0)
    d.set_defaults(func=cmd_demo)
    r = sub.add_parser("register", help="register a signed model certificate for a proof on the chain",
                       description="Verifies the proof as `pol verify` does, signs a model certificate (owner "
                                   "key, model hash, proof root, metadata) and submits it to a node; miners carry "
                                   "it in a block. The same owner, proof and model are registered once.")
    r.add_argument("proof_dir")
    from node.cli_ops import node_url
    r.add_argument("--node", default="http://127.0.0.1:8000", type=node_url, metavar="URL",
                   help="the node's API: http(s)://HOST:PORT, HOST:PORT or HOST (port 8000) (default %(default)s)")
    r.add_argument("--key", default="owner.key", metavar="FILE",
                   help="the owner's Ed25519 key (PEM; default owner.key); must exist unless --create-key "
                        "(`polchain keys new --key FILE` makes one)")
    r.add_argument("--create-key", action="store_true", help="create the --key file if it does not exist")
    r.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata (repeatable)")
    r.add_argument("--queries", type=_positive_int, default=None, metavar="Q",
                   help="as for pol verify: replay the Q largest updates per epoch (default: every segment)")
    r.add_argument("--no-verify", action="store_true",
                   help="register without verifying (for models the CLI cannot rebuild; check them in Python)")
    r.set_defaults(func=cmd_register)
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])


def add_commands(subparsers) -> None:
    """Add the `pol` command (with `verify` and `demo`) to an argparse subparsers object."""
    p = subparsers.add_parser("pol", help="proof-of-learning: record, verify, demo")
    _add_pol_subcommands(p)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pol", description="proof-of-learning tools")
    _add_pol_subcommands(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
