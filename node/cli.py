"""The `polchain` command line."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from consensus.spec import PRESETS, preset
from node.allocator import tune_allocator
from node.argtypes import nonneg_int, positive_int
from node.devices import device_arg
from node.threads import threads_arg


THREADS_HELP = "torch CPU threads (default: measured per model, printed at start; see node/threads.py)"


def _env(name: str, default=None):
    return os.environ.get(f"POLCHAIN_{name}", default)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2): the usage block hides the message."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_datadir_args(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    """--datadir (alias --data-dir): the chain's directory; --dataset-dir: the dataset cache."""
    from .settings import _SameValue
    p.add_argument("--datadir", "--data-dir", dest="datadir", required=required, action=_SameValue, metavar="DIR",
                   help="the chain's directory (--data-dir is the same option)")
    p.add_argument("--dataset-dir", type=Path, default=None, metavar="DIR",
                   help="dataset cache (default: the one DATADIR/polchain.toml remembers, else DATADIR/data); "
                        "a datadir remembers the --dataset-dir it was run with")


def _lock(datadir: Path):
    """The datadir's lock, or None after printing why it is taken."""
    from .lock import DatadirBusy, DatadirLock
    try:
        return DatadirLock(datadir).acquire()
    except DatadirBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _remove_fresh_datadir(datadir: Path, lock) -> None:
    """A datadir this command created and then could not open holds only what the attempt wrote
    (its LOCK, an empty store): removed, so a failed start leaves nothing behind."""
    import shutil
    lock.release()
    shutil.rmtree(datadir, ignore_errors=True)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if logging.getLogger().level > logging.DEBUG:      # one INFO line per HTTP request otherwise (pol register)
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


# -- spec -------------------------------------------------------------------------
def cmd_spec(args) -> int:
    spec = preset(args.preset)
    if args.dataset_archive is not None:
        from consensus.data import DatasetError
        from node.dataset import spec_for_archive
        try:
            spec = spec_for_archive(spec, args.dataset_archive, args.name)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        d = spec.dataset
        print(f"{spec.name}: {d.train_size} train + {d.test_size} test images from {args.dataset_archive} "
              f"(MD5 {d.archive_md5}); run nodes with --spec FILE --dataset-dir "
              f"{Path(args.dataset_archive).resolve().parent}", file=sys.stderr)
    elif args.name:
        spec = dataclasses.replace(spec, name=args.name)
    if args.k is not None:
        try:
            spec = spec.with_difficulty(args.k)
        except ValueError as exc:
            print(f"error: --k: {exc}", file=sys.stderr)
            return 2
        print(f"difficulty lowered: k = {args.k} at genesis and as the minimum (another chain; everything "
              f"else as {spec.name})", file=sys.stderr)
        if not args.name:
            spec = dataclasses.replace(spec, name=f"{spec.name}-k{args.k}")
    text = spec.to_json()
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output} (chain id {spec.chain_id})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


# -- mine (solo, no network) -------------------------------------------------------
def cmd_mine(args) -> int:
    # the arguments, the spec and the key first: a mistake is named before torch is imported
    from node.keys import load_or_create_key, open_key
    from node.setup import dataset_dir_of, open_chain, resolve_spec
    from node.startup_error import StartupError
    from node.threads import apply_threads

    datadir = Path(args.datadir)
    fresh = not datadir.exists()
    key = None
    try:
        spec = resolve_spec(datadir, args.preset, args.spec)     # reads only: a bad spec leaves no datadir
        if args.key:   # a key the operator named: a typo is an error, not a new key (DATADIR/node.key is made)
            key = open_key(Path(args.key), create=args.create_key)
        dataset_dir, remembered = dataset_dir_of(datadir, args.dataset_dir)
    except (StartupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lock = _lock(datadir)
    if lock is None:
        return 2
    try:
        print(apply_threads(args.threads, spec.model.arch, args.device), file=sys.stderr)
        if remembered:
            print(f"dataset directory {dataset_dir} (from {remembered})", file=sys.stderr)
        chain = open_chain(datadir, spec, data_dir=dataset_dir, archival=True)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if fresh:
            _remove_fresh_datadir(datadir, lock)
        return 2
    if key is None:
        try:
            key = load_or_create_key(Path(args.datadir) / "node.key")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    from consensus.errors import Verdict
    from miner.search import make_miner
    from node.mining import mine_on_tip
    miner = make_miner(args.miner, spec, chain.dataset, device=args.device, seed=args.seed)
    start = chain.tip().height
    # each block gets one line below (attempts, seconds, steps, accuracy); the chain's own 'new tip'
    # INFO line would say it a second time. Its warnings (a reorg, a store error) still show.
    logging.getLogger("polchain.chain").setLevel(max(logging.WARNING, logging.getLogger().level))
    print(f"mining {args.blocks} blocks on {spec.name} (chain {spec.chain_id[:16]}) from height {start}, "
          f"miner={args.miner} device={miner.device}", file=sys.stderr)
    from .progress import Progress
    with Progress(args.blocks, "mine") as bar:
        for i in range(args.blocks):
            block, found = mine_on_tip(chain, miner, key)
            header = block.header
            out = chain.submit(block)
            if out.status != Verdict.ACCEPTED:
                bar.print(f"error: own block rejected: {out.code} {out.detail}")
                return 1
            bar.print(f"block {header.height} {header.hash[:16]} k={header.difficulty} attempts={found.attempts} "
                      f"{found.seconds:.2f}s steps={len(found.nonces)} acc {found.acc_after.correct}"
                      f"/{spec.evaluation.size}")
            bar.update(i + 1, f"height {header.height}")
    tip = chain.tip()
    print(json.dumps({"height": tip.height, "tip": tip.hash, "cumulative_work": tip.cumulative_work}))
    return 0


# -- verify --------------------------------------------------------------------------
def cmd_verify(args) -> int:
    from node.setup import dataset_dir_of, open_chain, resolve_spec
    from node.startup_error import StartupError
    from node.threads import apply_threads

    from .progress import Progress

    datadir = Path(args.datadir)
    if not (datadir / "spec.json").exists():
        print(f"error: {datadir} holds no chain (no spec.json): nothing to verify", file=sys.stderr)
        return 2
    if _lock(datadir) is None:
        return 2
    try:
        spec = resolve_spec(datadir)
        dataset_dir, remembered = dataset_dir_of(datadir, args.dataset_dir)
        print(apply_threads(args.threads, spec.model.arch), file=sys.stderr)
        if remembered:
            print(f"dataset directory {dataset_dir} (from {remembered})", file=sys.stderr)
        chain = open_chain(datadir, spec, data_dir=dataset_dir)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from node.verify import verify_chain
    print(f"replaying {chain.tip().height} blocks from genesis", file=sys.stderr)
    with Progress(None, "verify") as bar:
        def progress(h, n):
            bar.total = n
            bar.update(h)
        rep = verify_chain(chain, progress=progress)
    if rep.ok:
        print(f"OK: {rep.verified} blocks replayed from genesis in {rep.seconds:.1f}s; tip {rep.tip[:16]} "
              f"height {rep.height}; tip model accuracy {rep.final_accuracy}/{spec.evaluation.size} on E")
        return 0
    print(f"FAIL: block {rep.bad_height} ({rep.bad_hash}) {rep.code}: {rep.detail}")
    return 1


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = Parser(prog="polchain", description="A proof-of-learning (DGG) blockchain node")
    p.add_argument("--version", action="version", version=f"polchain {__version__}")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   type=str.upper, help="log level (default INFO; env POLCHAIN_LOG_LEVEL)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("spec", help="print a preset chain spec (genesis document)")
    s.add_argument("--preset", choices=PRESETS, default="tiny")
    s.add_argument("-o", "--output")
    s.add_argument("--dataset-archive", type=Path, metavar="PATH",
                   help="a CIFAR-10 archive in the official binary layout (e.g. a sample): the preset's rules "
                        "on it, with its split sizes, MD5 and decoded split hashes pinned")
    s.add_argument("--name", help="chain name (default: the preset's; PRESET-sample for another archive)")
    s.add_argument("--k", type=positive_int,
                   help="difficulty at genesis and as the minimum, e.g. 4 for a CPU testnet on "
                                         "ResNet-18 (another chain; the name gets -kK)")
    s.set_defaults(func=cmd_spec)

    s = sub.add_parser("mine", help="mine N blocks solo (no network) into a datadir")
    s.add_argument("--preset", choices=PRESETS)
    s.add_argument("--spec", type=Path)
    s.add_argument("--blocks", type=nonneg_int, default=1)
    add_datadir_args(s, required=True)
    s.add_argument("--key", metavar="FILE", help="Ed25519 key (PEM) to mine with; must exist unless --create-key "
                                                 "(default DATADIR/node.key, created if missing)")
    s.add_argument("--create-key", action="store_true", help="create the --key file if it does not exist")
    s.add_argument("--device", default="cpu", type=device_arg)
    s.add_argument("--miner", choices=("fast", "reference"), default="fast")
    s.add_argument("--seed", type=nonneg_int, default=None)
    s.add_argument("--threads", type=threads_arg, default=None, help=THREADS_HELP)
    s.set_defaults(func=cmd_mine)

    s = sub.add_parser("verify", help="replay every stored block from genesis")
    add_datadir_args(s, required=True)
    s.add_argument("--threads", type=threads_arg, default=None, help=THREADS_HELP)
    s.set_defaults(func=cmd_verify)

    import importlib
    for mod in ("node.cli_node", "node.cli_testnet", "node.cli_ops", "bench.cli", "pol.cli"):
        importlib.import_module(mod).add_commands(sub)
    return p


EXIT_BROKEN_PIPE = 128 + 13   # what a shell shows for a command killed by SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """The CLI. Output into a pipe that closed early (`polchain status | head -5`) ends the command
    quietly, as SIGPIPE ends C tools: no traceback, exit status 141. (SIGPIPE itself stays ignored,
    as Python sets it: a node must not die of a client that hung up.)"""
    try:
        rc = _main(argv)
        sys.stdout.flush()                  # a buffered write fails here, not at interpreter exit
        return rc
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    """stdout to /dev/null, so that the interpreter's last flush of the lost output raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _main(argv: list[str] | None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--version"]:   # answer without importing torch
        from . import __version__
        print(f"polchain {__version__}")
        return 0
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    tune_allocator()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
