"""Node settings: every flag has a POLCHAIN_* environment variable."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"POLCHAIN_{name}", default)


def _env_bool(name: str, default: bool = False) -> bool:
    v = _env(name)
    return default if v is None else v.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    datadir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    peers: list[str] = field(default_factory=list)
    public_url: str | None = None       # how peers reach us (default http://host:port)
    mine: bool = False
    device: str = "auto"
    miner: str = "fast"
    preset: str | None = None
    spec_file: Path | None = None
    key_file: Path | None = None
    data_dir: Path | None = None        # dataset cache
    keep_weights: int = 100
    archival: bool = False
    threads: int | None = None          # torch intra-op threads
    max_body_bytes: int = 64 << 20
    poll_interval: float = 2.0
    max_peers: int = 32
    discover: bool = True               # learn peers from peers' lists (p2p)
    assume_valid: str | None = None     # trust headers up to this block hash (p2p, docs/p2p.md)
    # admission control (node/admission.py, docs/security.md)
    rate_limit: float = 10.0            # POST /blocks per second per client (certificates 1/2, peers 1/10)
    rate_burst: int = 40
    trusted_clients: tuple[str, ...] = ("127.0.0.1", "::1")   # not rate-limited, never banned
    validation_queue: int = 16          # blocks posted to the API waiting for the validator
    max_large_bodies: int = 4           # request bodies over 256 KiB read at once

    @property
    def url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def env_defaults() -> dict:
    """Defaults for the CLI taken from the environment."""
    peers = [p for p in (_env("PEERS", "") or "").replace(",", " ").split() if p]
    return dict(
        datadir=_env("DATADIR"), host=_env("HOST", "127.0.0.1"), port=int(_env("PORT", "8000")),
        peers=peers, public_url=_env("PUBLIC_URL"), mine=_env_bool("MINE"), device=_env("DEVICE", "auto"),
        miner=_env("MINER", "fast"), preset=_env("PRESET"), spec_file=_env("SPEC"), key_file=_env("KEY"),
        data_dir=_env("DATA_DIR"), keep_weights=int(_env("KEEP_WEIGHTS", "100")),
        archival=_env_bool("ARCHIVAL"), threads=int(_env("THREADS")) if _env("THREADS") else None,
        max_body_bytes=int(_env("MAX_BODY_BYTES", str(64 << 20))),
        poll_interval=float(_env("POLL_INTERVAL", "2.0")),
        discover=_env_bool("DISCOVER", True), assume_valid=_env("ASSUME_VALID"),
    )
