"""`polchain node`: run a node (REST API, P2P, optional miner)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from .settings import Settings, env_defaults

log = logging.getLogger("polchain.node")


def add_commands(sub) -> None:
    d = env_defaults()
    s = sub.add_parser("node", help="run a node: REST API, gossip and sync, optional miner",
                       description="Every flag also reads a POLCHAIN_* environment variable "
                                   "(POLCHAIN_DATADIR, POLCHAIN_PORT, POLCHAIN_PEERS, POLCHAIN_MINE, ...).")
    s.add_argument("--datadir", default=d["datadir"] or "./polchain-data")
    s.add_argument("--host", default=d["host"])
    s.add_argument("--port", type=int, default=d["port"])
    s.add_argument("--peer", action="append", dest="peers", default=None,
                   help="peer URL, e.g. http://10.0.0.2:8000 (repeatable; POLCHAIN_PEERS space/comma separated)")
    s.add_argument("--public-url", default=d["public_url"], help="URL peers use to reach this node")
    s.add_argument("--mine", action="store_true", default=d["mine"])
    s.add_argument("--device", default=d["device"], help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N")
    s.add_argument("--miner", choices=("fast", "reference"), default=d["miner"])
    s.add_argument("--preset", default=d["preset"])
    s.add_argument("--spec", type=Path, default=d["spec_file"])
    s.add_argument("--key", type=Path, default=d["key_file"])
    s.add_argument("--data-dir", type=Path, default=d["data_dir"], help="dataset cache (default DATADIR/data)")
    s.add_argument("--keep-weights", type=int, default=d["keep_weights"],
                   help="keep the weights of the last N blocks (pruning)")
    s.add_argument("--archival", action="store_true", default=d["archival"], help="keep all weights")
    s.add_argument("--threads", type=int, default=d["threads"], help="torch CPU threads (default: measured per model, logged at start; see node/threads.py)")
    s.add_argument("--poll-interval", type=float, default=d["poll_interval"])
    s.add_argument("--no-discover", dest="discover", action="store_false", default=d["discover"],
                   help="do not learn peers from other peers' lists (only --peer and peers that call us)")
    s.add_argument("--assume-valid", metavar="HASH", default=d["assume_valid"],
                   help="accept blocks up to this block hash on header checks alone, without their bodies "
                        "(see docs/p2p.md)")
    s.set_defaults(func=cmd_node)


def cmd_node(args) -> int:
    import uvicorn

    from .app import create_app
    from .chain import StartupError
    from .service import NodeService

    peers = args.peers if args.peers is not None else env_defaults()["peers"]
    settings = Settings(datadir=Path(args.datadir), host=args.host, port=args.port, peers=peers,
                        public_url=args.public_url, mine=args.mine, device=args.device, miner=args.miner,
                        preset=args.preset, spec_file=args.spec, key_file=args.key, data_dir=args.data_dir,
                        keep_weights=args.keep_weights, archival=args.archival, threads=args.threads,
                        poll_interval=args.poll_interval, discover=args.discover,
                        assume_valid=args.assume_valid)
    if settings.preset is None and settings.spec_file is None and not (settings.datadir / "spec.json").exists():
        settings.preset = "tiny"
    try:
        service = NodeService(settings)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(service)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            timeout_keep_alive=5, limit_concurrency=256, timeout_graceful_shutdown=5)
    server = _server_class()(config)
    server.run()
    if not server.started:  # e.g. the port is taken, or the service failed to start
        print(f"error: the node did not start on {settings.host}:{settings.port} (see the log above)",
              file=sys.stderr)
        return 1
    import gc
    gc.freeze()  # the process is about to exit: skip seconds of garbage collection at interpreter shutdown
    return 0


def _server_class():
    import contextlib
    import signal
    import threading

    import uvicorn

    class NodeServer(uvicorn.Server):
        """uvicorn re-raises SIGINT/SIGTERM once it has shut down gracefully, so the process
        would die of the signal (exit status -15/130). A node that stopped cleanly exits 0."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return NodeServer
