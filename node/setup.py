"""Opening a datadir: resolve the spec, load and check the data, open the chain."""
from __future__ import annotations

import logging
from pathlib import Path

from consensus.data import DatasetError, load_dataset
from consensus.spec import ChainSpec, preset

from .chain import Chain, StartupError
from .dataset import ensure_archive

log = logging.getLogger("polchain.node")
SPEC_FILE = "spec.json"


def resolve_spec(datadir: Path, preset_name: str | None = None, spec_file: Path | None = None) -> ChainSpec:
    """The spec named on the command line, checked against the datadir's.

    With neither --preset nor --spec, the datadir's own spec.json is used.
    """
    datadir = Path(datadir)
    stored = datadir / SPEC_FILE
    if spec_file is not None:
        spec = ChainSpec.from_json(Path(spec_file).read_text())
    elif preset_name is not None:
        spec = preset(preset_name)
    elif stored.exists():
        spec = ChainSpec.from_json(stored.read_text())
    else:
        raise StartupError(f"{datadir} has no {SPEC_FILE}: name a --preset or a --spec file")
    if stored.exists():
        have = ChainSpec.from_json(stored.read_text())
        if have.chain_id != spec.chain_id:
            raise StartupError(f"{datadir} holds chain {have.chain_id[:16]} ({have.name}), "
                               f"not {spec.chain_id[:16]} ({spec.name})")
    else:
        datadir.mkdir(parents=True, exist_ok=True)
        stored.write_text(spec.to_json())
    return spec


def data_dir_for(datadir: Path, data_dir: Path | None) -> Path:
    return Path(data_dir) if data_dir else Path(datadir) / "data"


def open_chain(datadir: Path, spec: ChainSpec, *, data_dir: Path | None = None, keep_weights: int = 100,
               archival: bool = False, progress: bool = True) -> Chain:
    try:
        data = data_dir_for(datadir, data_dir)
        ensure_archive(spec.dataset, data, progress=progress)  # found by MD5 there, else the official download
        dataset = load_dataset(spec.dataset, data)
    except DatasetError as exc:
        raise StartupError(str(exc)) from None
    return Chain(spec, Path(datadir), dataset, keep_weights=keep_weights, archival=archival)
