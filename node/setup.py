"""Opening a datadir: resolve the spec, load and check the data, open the chain.

Resolving the spec imports no torch (``open_chain`` does, when it loads the data and the chain): a
command names a bad spec file or another chain's datadir at once."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from consensus.hashing import canonical_json, sha256_hex
from consensus.spec import HEADER_VERSION, ChainSpec, preset

from .settings import CONFIG_FILE, SettingsError, remember_dataset_dir, stored_dataset_dir
from .startup_error import StartupError

if TYPE_CHECKING:
    from .chain import Chain

log = logging.getLogger("polchain.node")
SPEC_FILE = "spec.json"


def resolve_spec(datadir: Path, preset_name: str | None = None, spec_file: Path | None = None) -> ChainSpec:
    """The spec named on the command line, checked against the datadir's.

    With neither --preset nor --spec, the datadir's own spec.json is used. Nothing is written
    here: ``open_chain`` records the spec once the chain has opened, so a refused start leaves
    the datadir as it was.
    """
    datadir = Path(datadir)
    stored = datadir / SPEC_FILE
    have = _stored_spec(stored) if stored.exists() else None
    if spec_file is not None:
        spec = read_spec_file(spec_file)
    elif preset_name is not None:
        spec = preset(preset_name)
    elif have is not None:
        spec = have
    else:
        raise StartupError(f"{datadir} has no {SPEC_FILE}: name a --preset or a --spec file")
    if have is not None and have.chain_id != spec.chain_id:
        raise StartupError(f"{datadir} holds chain {have.chain_id[:16]} ({have.name}), "
                           f"not {spec.chain_id[:16]} ({spec.name})")
    return spec


def read_spec_file(path: Path) -> ChainSpec:
    """A ``--spec`` file, or a StartupError in one line naming the file: missing or unreadable, not
    JSON (truncated), not a spec this node runs, a field of the wrong type."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise StartupError(f"--spec {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise StartupError(f"--spec {path}: not a text file") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise StartupError(f"--spec {path}: not JSON ({exc}); write one with `polchain spec`") from None
    if not isinstance(obj, dict):
        raise StartupError(f"--spec {path}: not a chain spec (a JSON object is expected)")
    try:
        return ChainSpec.from_dict(obj)
    except ValueError as exc:
        raise StartupError(f"--spec {path}: {exc}") from None


def _stored_spec(stored: Path) -> ChainSpec:
    """The datadir's spec.json; one this version cannot run (a protocol v1 datadir) is named by its
    chain id, never parsed into a traceback."""
    text = stored.read_text()
    try:
        return ChainSpec.from_json(text)
    except ValueError as exc:
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise StartupError(f"{stored} is not a chain spec ({exc})") from None
        chain_id = sha256_hex(canonical_json(obj))
        raise StartupError(
            f"the datadir holds chain {chain_id[:16]}... ({obj.get('name', '?')}, spec format "
            f"{obj.get('format')!r}, protocol v{obj.get('header_version', '?')}), which this node (protocol "
            f"v{HEADER_VERSION}) cannot run; {upgrade_hint(obj.get('header_version'))}") from None


def upgrade_hint(version) -> str:
    """Why an older datadir cannot be upgraded in place, and what to do."""
    why = ("v2 and later blocks carry no weights" if version == 1 else
           "v3 replays every block with the exact step, so v2 post-states differ" if version == 2 else
           "v4 headers carry an admission ticket and derive batches in their redraw epoch")
    return (f"a protocol v{version} datadir cannot be upgraded in place ({why}): keep it for a v{version} node, "
            "or use another --datadir")


def data_dir_for(datadir: Path, data_dir: Path | None) -> Path:
    return Path(data_dir) if data_dir else Path(datadir) / "data"


def open_chain(datadir: Path, spec: ChainSpec, *, data_dir: Path | None = None, keep_weights: int = 100,
               archival: bool = False, progress: bool = True) -> Chain:
    from consensus.data import DatasetError, load_dataset

    from .chain import Chain
    from .dataset import ensure_archive
    try:
        data = data_dir_for(datadir, data_dir)
        ensure_archive(spec.dataset, data, progress=progress)  # found by MD5 there, else the official download
        dataset = load_dataset(spec.dataset, data)
    except DatasetError as exc:
        raise StartupError(str(exc)) from None
    chain = Chain(spec, Path(datadir), dataset, keep_weights=keep_weights, archival=archival)
    stored = Path(datadir) / SPEC_FILE
    if not stored.exists():
        stored.write_text(spec.to_json())
    if remember_dataset_dir(datadir, data_dir):
        log.info("dataset directory %s remembered in %s (later runs need no --dataset-dir)",
                 Path(data_dir).resolve(), Path(datadir) / CONFIG_FILE)
    return chain


def dataset_dir_of(datadir: Path, given: Path | None) -> tuple[Path | None, str | None]:
    """The dataset directory for a command on ``datadir``: ``given`` (--dataset-dir) when set, else the
    one the datadir remembers (DATADIR/polchain.toml), else None (DATADIR/data). With where it came from
    (None for the flag or the default). StartupError for an unreadable config file."""
    if given is not None:
        return given, None
    try:
        stored = stored_dataset_dir(datadir)
    except SettingsError as exc:
        raise StartupError(str(exc)) from None
    return (stored, str(Path(datadir) / CONFIG_FILE)) if stored is not None else (None, None)
