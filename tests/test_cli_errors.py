"""A bad spec file or a device torch cannot use is one line and exit 2, for every command that takes
them (issue 21.3: these were tracebacks, exit 1 or 3), and a failed `mine` leaves no datadir."""
from __future__ import annotations

import json

import pytest

from consensus.spec import preset
from tests.test_operator_cli import one_line_error, polchain


def _spec(tmp_path, name: str) -> str:
    """A spec file damaged as ``name`` says."""
    p = tmp_path / f"{name}.json"
    d = preset("tiny").to_dict()
    if name == "truncated":
        p.write_text(json.dumps(d)[:40])
        return str(p)
    if name == "lr-word":
        d["training"]["lr"] = "fast"
    elif name == "k-string":
        d["difficulty"]["initial"] = "8"
    elif name == "two-means":
        d["training"]["mean"] = ["0.5", "0.5"]
    elif name == "a-list":
        d = [1]
    p.write_text(json.dumps(d))
    return str(p)


@pytest.mark.parametrize("damage, message", [
    ("missing", "cannot read it (No such file or directory)"),
    ("truncated", "not JSON"),
    ("lr-word", "training.lr = 'fast' is not a decimal number"),
    ("k-string", "difficulty.initial = '8' is not of type int"),
    ("two-means", "training.mean = ('0.5', '0.5') is not of type tuple[str, str, str]"),
    ("a-list", "not a chain spec"),
])
def test_mine_with_a_bad_spec_file_is_one_line(tmp_path, damage, message):
    spec = str(tmp_path / "missing.json") if damage == "missing" else _spec(tmp_path, damage)
    line = one_line_error(polchain("mine", "--spec", spec, "--blocks", "1", "--datadir", str(tmp_path / "d")))
    assert line.startswith(f"error: --spec {spec}: ") and message in line, line
    assert not (tmp_path / "d").exists()                          # a failed mine leaves no datadir


@pytest.mark.parametrize("command", [("node",), ("bench", "chain"), ("testnet",)])
def test_other_commands_name_the_bad_spec_file(tmp_path, command):
    spec = _spec(tmp_path, "lr-word")
    args = (*command, "--spec", spec) + (("--datadir", str(tmp_path / "d")) if command != ("bench", "chain") else ())
    line = one_line_error(polchain(*args))
    assert "training.lr = 'fast' is not a decimal number" in line and spec in line, line


@pytest.mark.slow
def test_a_cuda_device_on_a_cpu_torch_is_one_line(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error is for CPU-only torch")
    for args in (("mine", "--preset", "tiny", "--datadir", str(tmp_path / "m")),
                 ("node", "--preset", "tiny", "--mine", "--device", "cuda", "--datadir", str(tmp_path / "n")),
                 ("bench", "step", "--preset", "tiny")):
        args = args + (("--device", "cuda") if "--device" not in args else ())
        line = one_line_error(polchain(*args))
        assert "--device" in line and ("CPU build" in line or "no CUDA device" in line), (args, line)
        assert "Traceback" not in line
    assert not (tmp_path / "m").exists() and not (tmp_path / "n" / "chain.sqlite").exists()
