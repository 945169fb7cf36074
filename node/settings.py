"""Node settings, declared once.

Each field of ``Settings`` carries its flag(s), its ``POLCHAIN_*`` variable, its config-file key,
its default and its help; ``node.cli_node`` builds the argparse flags from them and
``load_settings`` merges the sources. Precedence, highest first:

    command-line flag  >  POLCHAIN_* environment variable  >  config file  >  default

The config file is TOML: ``--config PATH`` (``POLCHAIN_CONFIG``), else ``DATADIR/polchain.toml``
when it exists. Its keys are the variable names in lower case (``poll_interval = 0.5``,
``peers = ["http://10.0.0.2:8000"]``); it cannot move the datadir it lives in.
Bad values anywhere raise ``SettingsError`` with a one-line message.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from consensus.spec import PRESETS

CONFIG_FILE = "polchain.toml"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A bad flag, variable or config value (one line, for the operator)."""


def _opt(default: Any, help: str, *, kind: type = str, flags: tuple[str, ...] = (), env: tuple[str, ...] = (),
         choices: tuple[str, ...] | None = None, check: Callable[[Any], str | None] | None = None,
         in_config: bool = True, metavar: str | None = None):
    meta = dict(help=help, kind=kind, flags=flags, env=env, choices=choices, check=check, in_config=in_config,
                metavar=metavar)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _devices(v: str) -> str | None:
    from .devices import expand_devices
    try:
        expand_devices(v)
    except ValueError as exc:
        return str(exc).removeprefix(f"--device {v!r}: ")
    return None


def _port(v: int) -> str | None:
    return None if 0 < v < 65536 else f"{v} is not a TCP port (1-65535)"


def _positive(v) -> str | None:
    return None if v > 0 else f"{v} is not positive"


def _hex_hash(v: str | None) -> str | None:
    return None if v is None or re.fullmatch(r"[0-9a-fA-F]{64}", v) else f"{v!r} is not a 64-hex block hash"


def _http_url(v: str | None) -> str | None:
    return None if v is None or re.match(r"^https?://[^\s/]+", v) else f"{v!r} is not an http(s):// URL"


def _peer_urls(v: list[str]) -> str | None:
    return next((_http_url(u) for u in v if _http_url(u)), None)


def _existing_file(v: Path | None) -> str | None:
    return None if v is None or Path(v).is_file() else f"no such file: {v}"


@dataclass
class Settings:
    datadir: Path = _opt(Path("./polchain-data"), "the node's directory: chain database, weights, node.key, "
                         f"{CONFIG_FILE}", kind=Path, flags=("--datadir", "--data-dir"), in_config=False,
                         metavar="DIR")
    host: str = _opt("127.0.0.1", "interface the API listens on (0.0.0.0: every interface)")
    port: int = _opt(8000, "TCP port of the REST API and the explorer", kind=int, check=_port)
    peers: list[str] = _opt([], "peer URL, e.g. http://10.0.0.2:8000 (repeatable; the variable takes a "
                            "space- or comma-separated list)", kind=list, flags=("--peer",), check=_peer_urls,
                            metavar="URL")
    public_url: str | None = _opt(None, "URL peers use to reach this node (default http://HOST:PORT)",
                                  check=_http_url, metavar="URL")
    mine: bool = _opt(False, "mine blocks on the tip", kind=bool)
    device: str = _opt("auto", "miner device: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, or several "
                       "(cuda:0,cuda:1 or cuda:all: one search per device on the same tip)", check=_devices)
    miner: str = _opt("fast", "mining loop: fast (ghost-batch search) or reference (Algorithm 1)",
                      choices=("fast", "reference"))
    preset: str | None = _opt(None, "chain preset for a new datadir (an existing one keeps its spec.json; "
                              "tiny when neither this nor --spec is given)", choices=PRESETS)
    spec_file: Path | None = _opt(None, "genesis document (JSON, from `polchain spec`) for a new datadir",
                                  kind=Path, flags=("--spec",), env=("SPEC",), check=_existing_file, metavar="FILE")
    key_file: Path | None = _opt(None, "Ed25519 mining key, PEM (default DATADIR/node.key, created if missing; a "
                                 "--key file must exist unless --create-key; see `polchain keys`)", kind=Path,
                                 flags=("--key",), env=("KEY",), metavar="FILE")
    create_key: bool = _opt(False, "create the --key file if it does not exist", kind=bool)
    dataset_dir: Path | None = _opt(None, "dataset cache (default DATADIR/data; a --dataset-dir elsewhere is "
                                    f"remembered in DATADIR/{CONFIG_FILE})", kind=Path,
                                    env=("DATASET_DIR", "DATA_DIR"), metavar="DIR")
    log_file: Path | None = _opt(None, "also append the log (the same lines as on stderr) to this file",
                                 kind=Path, metavar="PATH")
    keep_weights: int = _opt(100, "keep the weights of the last N blocks (older ones are pruned)", kind=int,
                             check=_positive, metavar="N")
    archival: bool = _opt(False, "keep the weights of every block (no pruning)", kind=bool)
    threads: int | None = _opt(None, "torch threads (default: torch's choice)", kind=int, check=_positive,
                               metavar="N")
    max_body_bytes: int = _opt(1 << 20, "largest POST /blocks body accepted, bytes (capped by twice the spec's "
                               "largest block, header + max records, plus framing)", kind=int, check=_positive,
                               metavar="BYTES")
    poll_interval: float = _opt(2.0, "seconds between polls of the peers' tips", kind=float, check=_positive,
                                metavar="SECONDS")
    max_peers: int = _opt(32, "size of the peer book", kind=int, check=_positive, metavar="N")
    discover: bool = _opt(True, "learn peers from other peers' lists (--no-discover: only --peer and peers "
                          "that call us)", kind=bool)
    assume_valid: str | None = _opt(None, "accept blocks up to this block hash on header checks alone, without "
                                    "their bodies (see docs/p2p.md)", check=_hex_hash, metavar="HASH")
    # admission control (node/admission.py, docs/security.md)
    rate_limit: float = _opt(10.0, "POST /blocks per second per API client (certificates 1/2 of it, peers 1/10)",
                             kind=float, check=_positive, metavar="PER_SECOND")
    rate_burst: int = _opt(40, "token-bucket burst per API client", kind=int, check=_positive, metavar="N")
    trusted_clients: list[str] = _opt(["127.0.0.1", "::1"], "client addresses never rate-limited or banned, "
                                      "with API connections of their own (set empty behind a reverse proxy on this "
                                      "host)", kind=list, metavar="HOST")
    validation_queue: int = _opt(16, "blocks posted to the API waiting for the validator (more: 503 busy)",
                                 kind=int, check=_positive, metavar="N")
    max_large_bodies: int = _opt(4, "request bodies over 256 KiB read at once (more: 503 busy)", kind=int,
                                 check=_positive, metavar="N")
    # the connection layer (node/connections.py, docs/security.md)
    max_connections: int = _opt(512, "API connections open at once from clients that are not trusted, 1/8 of "
                                "them kept for known senders (--peer seeds' hosts, hosts with a valid block here); "
                                "trusted clients have 128 of their own; more: 503 busy and closed", kind=int,
                                check=_positive, metavar="N")
    max_connections_per_network: int = _opt(64, "API connections open at once from one network (IPv4 /24, IPv6 "
                                            "/48) of clients without a record here", kind=int, check=_positive,
                                            metavar="N")
    max_connections_per_address: int = _opt(32, "API connections open at once from one address (raise it behind a "
                                            "reverse proxy on another host)", kind=int, check=_positive,
                                            metavar="N")
    cap_local_networks: bool = _opt(False, "apply the per-network connection cap to loopback and private "
                                    "networks too (by default each address there is capped alone: an "
                                    "operator's own machines)", kind=bool)

    @property
    def url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


# -- the declaration, read back ------------------------------------------------------------
def options() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Settings))


def flags_of(f: dataclasses.Field) -> tuple[str, ...]:
    return f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)


def env_of(f: dataclasses.Field) -> tuple[str, ...]:
    return f.metadata["env"] or (f.name.upper(),)


def config_key(f: dataclasses.Field) -> str:
    return env_of(f)[0].lower()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting. Defaults are left out of the namespace (SUPPRESS) so that
    ``load_settings`` can tell a flag that was given from one that was not."""
    for f in options():
        m = f.metadata
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = "none" if default is None or default == [] else str(default).lower() if m["kind"] is bool else default
        help_ = f"{m['help']} (default: {shown}; env POLCHAIN_{env_of(f)[0]})"
        kw: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=help_)
        if m["kind"] is bool:
            parser.add_argument(*flags_of(f), action=argparse.BooleanOptionalAction, **kw)
            continue
        if m["kind"] is list:
            kw["action"] = "append"
        elif len(flags_of(f)) > 1:
            kw["action"] = _SameValue
        parser.add_argument(*flags_of(f), metavar=m["metavar"] or (m["choices"] and "{" + ",".join(m["choices"]) + "}")
                            or f.name.split("_")[-1].upper(), **kw)


class _SameValue(argparse.Action):
    """Aliases (--datadir/--data-dir) name one setting: giving both with different values is an error."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest, None)
        if before is not None and before != values:
            parser.error(f"{' and '.join(self.option_strings)} are the same setting; given {before!r} and "
                         f"{values!r} (the dataset cache is --dataset-dir)")
        setattr(namespace, self.dest, values)


# -- conversion and checks ----------------------------------------------------------------
def _from_text(f: dataclasses.Field, raw: str, where: str) -> Any:
    kind = f.metadata["kind"]
    text = raw.strip()
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SettingsError(f"{where}={raw!r}: expected true or false (1/0, yes/no, on/off)")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise SettingsError(f"{where}={raw!r}: expected {'an integer' if kind is int else 'a number'}") from None
    if kind is list:
        return [p for p in text.replace(",", " ").split() if p]
    if kind is Path:
        return Path(text) if text else None
    return text


def _from_toml(f: dataclasses.Field, value: Any, where: str) -> Any:
    kind = f.metadata["kind"]
    ok = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          list: lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)}.get(kind, lambda v: isinstance(v, str))
    if not ok(value):
        want = {bool: "true or false", int: "an integer", float: "a number", list: "a list of strings"}.get(kind, "a string")
        raise SettingsError(f"{where} = {value!r}: expected {want}")
    if kind is float:
        return float(value)
    return Path(value) if kind is Path else value


def _check(f: dataclasses.Field, value: Any, where: str) -> Any:
    m = f.metadata
    if m["choices"] and value is not None and value not in m["choices"]:
        raise SettingsError(f"{where}: unknown {f.name} {value!r} (choose from {', '.join(m['choices'])})")
    if m["check"] and value is not None:
        problem = m["check"](value)
        if problem:
            raise SettingsError(f"{where}: {problem}")
    return value


# -- merging the sources -----------------------------------------------------------------
def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str], *, config: Path | None = None,
                  sources: dict[str, str] | None = None) -> Settings:
    """Settings from ``flags`` (an argparse namespace's dict, given flags only), ``environ`` and the
    config file, in that precedence. ``sources`` (if given) is filled with where each value came from."""
    by_name = {f.name: f for f in options()}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def put(f, value, where):
        values[f.name] = _check(f, value, where)
        origin[f.name] = where

    def from_env(f):
        for name in env_of(f):
            raw = environ.get(f"POLCHAIN_{name}")
            if raw is not None:
                return _from_text(f, raw, f"POLCHAIN_{name}"), f"POLCHAIN_{name}"
        return None

    # the datadir first: the config file lives in it
    dd = by_name["datadir"]
    if "datadir" in flags:
        put(dd, _from_text(dd, str(flags["datadir"]), "--datadir"), "--datadir")
    elif (hit := from_env(dd)) is not None:
        put(dd, *hit)
    path = config or (Path(environ["POLCHAIN_CONFIG"]) if environ.get("POLCHAIN_CONFIG") else None)
    if path is None:
        default_path = Path(values.get("datadir", dd.default)) / CONFIG_FILE
        path = default_path if default_path.is_file() else None
    if path is not None:
        for f, value in _read_config(path, by_name):
            put(f, _from_toml(f, value, f"{path}: {config_key(f)}"), str(path))
    for f in options():
        if f.name != "datadir" and (hit := from_env(f)) is not None:
            put(f, *hit)
    for name, raw in flags.items():
        f = by_name.get(name)
        if f is None or name == "datadir":
            continue
        flag = flags_of(f)[0]
        if f.metadata["kind"] is bool:
            put(f, bool(raw), flag)
        elif f.metadata["kind"] is list:
            put(f, [str(x) for x in raw], flag)
        else:
            put(f, _from_text(f, str(raw), flag), flag)
    if sources is not None:
        sources.update({f.name: origin.get(f.name, "default") for f in options()})
    return Settings(**values)


def _read_config(path: Path, by_name: dict[str, dataclasses.Field]):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        doc = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None
    keys = {config_key(f): f for f in by_name.values() if f.metadata["in_config"]}
    for key, value in doc.items():
        f = keys.get(key.replace("-", "_"))
        if f is None:
            hint = " (the config file lives in the datadir, so it cannot set it)" if key == "datadir" else ""
            raise SettingsError(f"{path}: unknown setting {key!r}{hint}; known: {', '.join(sorted(keys))}")
        yield f, value


# -- the dataset directory, remembered in the datadir ------------------------------------------
_REMEMBERED = "# written by polchain: the dataset cache this datadir was run with (--dataset-dir); a flag still wins"


def stored_dataset_dir(datadir: Path) -> Path | None:
    """``dataset_dir`` of DATADIR/polchain.toml, or None (no file, no key). SettingsError (one line)
    when the file is not a config file this node reads."""
    path = Path(datadir) / CONFIG_FILE
    if not path.is_file():
        return None
    by_name = {f.name: f for f in options()}
    for f, value in _read_config(path, by_name):
        if f.name == "dataset_dir":
            return _check(f, _from_toml(f, value, f"{path}: {config_key(f)}"), str(path))
    return None


def remember_dataset_dir(datadir: Path, dataset_dir: Path | None) -> bool:
    """Write ``dataset_dir`` (absolute) into DATADIR/polchain.toml, so that later commands on this
    datadir find the dataset without --dataset-dir again, as bitcoind and geth users expect of their
    datadir. Only when it is not the default (DATADIR/data) and the file names none yet: a value the
    operator wrote is never changed (the flag wins for the run that gives it). Appends to the file,
    keeping what it holds. Whether it wrote."""
    if dataset_dir is None:
        return False
    datadir = Path(datadir)
    target = Path(dataset_dir).expanduser().resolve()
    if target == (datadir / "data").resolve():
        return False
    path = datadir / CONFIG_FILE
    try:
        if stored_dataset_dir(datadir) is not None:
            return False
        text = path.read_text() if path.is_file() else ""
        import json
        line = f"dataset_dir = {json.dumps(str(target), ensure_ascii=False)}"
        with open(path, "a") as f:
            f.write(("" if not text or text.endswith("\n") else "\n") + f"{_REMEMBERED}\n{line}\n")
    except (OSError, SettingsError):
        return False      # a read-only or hand-broken file: the run goes on with the flag it was given
    return True


def describe(settings: Settings, sources: Mapping[str, str]) -> str:
    """The effective settings as TOML, each with where it came from (``polchain node --show-config``)."""
    lines = [f"# datadir = {str(settings.datadir)!r}  # from {sources.get('datadir', 'default')}"]
    for f in options():
        if f.name == "datadir":
            continue
        v = getattr(settings, f.name)
        text = ("[" + ", ".join(f'"{x}"' for x in v) + "]" if isinstance(v, list) else str(v).lower()
                if isinstance(v, bool) else repr(v) if isinstance(v, (int, float)) else f'"{v}"')
        key = config_key(f)
        lines.append(f"# {key} unset  # from default" if v is None else f"{key} = {text}  # from {sources[f.name]}")
    return "\n".join(lines) + "\n"
