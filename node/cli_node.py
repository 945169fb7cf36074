"""`polchain node`: run a node (REST API and explorer, P2P, optional miner).

Start-up order, each failure a one-line error and exit status 2 before anything runs:
settings (flags > POLCHAIN_* > DATADIR/polchain.toml > defaults), the listening port, the
datadir lock, then the chain.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from pathlib import Path

from .settings import CONFIG_FILE, SettingsError, add_arguments, describe, load_settings

log = logging.getLogger("polchain.node")


def add_commands(sub) -> None:
    s = sub.add_parser(
        "node", help="run a node: REST API and explorer, gossip and sync, optional miner",
        description="Run a node. Every setting is a flag, a POLCHAIN_* environment variable and a key of the "
                    f"TOML config file (--config, else DATADIR/{CONFIG_FILE}). Precedence: flag > variable > "
                    "config file > default. The explorer is at http://HOST:PORT/, the API docs at /docs.")
    add_arguments(s)
    s.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help=f"TOML config file (default DATADIR/{CONFIG_FILE} if present; env POLCHAIN_CONFIG)")
    s.add_argument("--show-config", action="store_true",
                   help="print the effective settings and where each comes from, then exit")
    s.set_defaults(func=cmd_node)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def add_log_file(path: Path) -> None:
    """The log's lines also appended to ``path`` (created with its directory), in the stderr format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    root = logging.getLogger()
    for h in root.handlers:                      # the same format as the stderr handler setup_logging made
        if h.formatter is not None:
            handler.setFormatter(h.formatter)
            break
    root.addHandler(handler)


def bind_port(host: str, port: int) -> socket.socket:
    """Bind the API's socket now, before the chain opens, so a taken port fails at once
    (uvicorn then serves on this very socket: no window for another process to take it)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def cmd_node(args) -> int:
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "log_level", "config",
                                                                "show_config")}
    sources: dict[str, str] = {}
    try:
        settings = load_settings(given, os.environ, config=args.config, sources=sources)
    except SettingsError as exc:
        return _fail(str(exc))
    if settings.dataset_dir is None:   # --config named another file: the datadir still remembers its dataset
        from .settings import stored_dataset_dir
        try:
            settings.dataset_dir = stored_dataset_dir(settings.datadir)
        except SettingsError:
            pass
        if settings.dataset_dir is not None:
            sources["dataset_dir"] = str(settings.datadir / CONFIG_FILE)
    if args.show_config:
        sys.stdout.write(describe(settings, sources))
        return 0
    if settings.key_file is not None and not settings.key_file.exists() and not settings.create_key:
        # a named key that is not there is a typo until said otherwise: never mine under a new key
        from .keys import missing_key_message
        where = sources.get("key_file", "--key")
        label = where if where == "--key" or where.startswith("POLCHAIN_") else f"{where}: key_file"
        return _fail(missing_key_message(settings.key_file, label))
    if settings.preset is None and settings.spec_file is None and not (settings.datadir / "spec.json").exists():
        settings.preset = "tiny"
    from .setup import resolve_spec           # no torch yet: a bad spec or another chain's datadir, named at once
    from .startup_error import StartupError
    try:
        spec = resolve_spec(settings.datadir, settings.preset, settings.spec_file)
    except StartupError as exc:
        return _fail(str(exc))
    if settings.log_file is not None:
        try:
            add_log_file(settings.log_file)
        except OSError as exc:
            return _fail(f"--log-file {settings.log_file}: cannot open it ({exc.strerror or exc})")
    try:
        sock = bind_port(settings.host, settings.port)
    except OSError as exc:
        why = "is already in use (another node?)" if exc.errno == errno.EADDRINUSE else f"cannot be bound: {exc}"
        return _fail(f"port {settings.port} on {settings.host} {why}; choose another with --port")
    from .lock import DatadirBusy, DatadirLock
    try:
        lock = DatadirLock(settings.datadir).acquire()
    except DatadirBusy as exc:
        sock.close()
        return _fail(str(exc))
    try:
        return _serve(settings, spec, sock)
    finally:
        lock.release()


def _serve(settings, spec, sock: socket.socket) -> int:
    import uvicorn

    from .admission import Lane
    from .app import create_app
    from .connections import ConnectionGate, ConnectionLimits, fit_to_files, raise_file_limit
    from .service import NodeService
    from .startup_error import StartupError

    try:
        service = NodeService(settings, spec)
    except (StartupError, ValueError, OSError) as exc:  # bad spec file, unreadable key, unknown device...
        sock.close()
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    app = create_app(service)
    wanted = ConnectionLimits(max_connections=settings.max_connections,
                              per_network=settings.max_connections_per_network,
                              per_address=settings.max_connections_per_address)
    files = raise_file_limit(wanted.files_needed())
    limits = fit_to_files(wanted, files)
    if limits != wanted:
        log.warning("only %d open files allowed (ulimit -n): at most %d API connections (%d trusted)", files,
                    limits.max_connections, limits.trusted)
    known = service.admission.lane
    gate = ConnectionGate(limits, settings.trusted_clients, lambda host: known(host) == Lane.KNOWN,
                          cap_local_networks=settings.cap_local_networks)
    # the gate bounds connections (node/connections.py); uvicorn's limit_concurrency counted them against
    # every client, trusted ones included (issue 30.1)
    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=5, limit_concurrency=None,
                            timeout_graceful_shutdown=5)
    server = _server_class()(config, gate)
    server.run(sockets=[sock])
    if not server.started:  # the service failed to start
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

    from .connections import Acceptor, ConnectionGate, GatedH11Protocol

    class NodeServer(uvicorn.Server):
        """uvicorn's server with the node's own accept loop (node/connections.py ``Acceptor``: the gate's caps,
        then uvicorn's h11 protocol with request deadlines) on the listening socket uvicorn would have served.

        uvicorn re-raises SIGINT/SIGTERM once it has shut down gracefully, so the process
        would die of the signal (exit status -15/130). A node that stopped cleanly exits 0."""

        def __init__(self, config: uvicorn.Config, gate: ConnectionGate):
            super().__init__(config)
            self.gate = gate
            self.acceptors: list[Acceptor] = []

        async def startup(self, sockets=None):
            await super().startup(sockets=[])          # the lifespan; no listener of uvicorn's own
            if not self.started:
                return
            # "started" once the sockets listen: uvicorn set it before our acceptors existed, and a caller that
            # waited for it could connect in between and be refused (tests/node/test_connections.py's server)
            self.started = False
            for sock in sockets or []:
                acceptor = Acceptor(sock, self.gate, self._protocol, backlog=self.config.backlog)
                acceptor.start()
                self.acceptors.append(acceptor)
            self.started = True

        def _protocol(self, slot):
            return GatedH11Protocol(config=self.config, server_state=self.server_state,
                                    app_state=self.lifespan.state, gate=self.gate, slot=slot)

        async def shutdown(self, sockets=None):
            for acceptor in self.acceptors:                # before uvicorn closes the sockets
                acceptor.stop()
            await super().shutdown(sockets=sockets)

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
