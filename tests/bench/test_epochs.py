"""`polchain bench epochs` at toy sizes: the floor's pass rate by epoch and the strategies' gains
(the figure itself, on tiny at full size, is tests/adversarial/test_epochs.py's)."""
from __future__ import annotations

import pytest

from node.cli import main
from tests.blocks import BlockSmith
from tests.chain_spec import TINY_TEST_FILE


def test_epochs_from_genesis_json(bench_json, shared_data, tmp_path):
    res = bench_json("epochs", "--preset", "tiny", "--trajectories", "6", "--warm-steps", "5",
                     "--out", str(tmp_path))
    assert res["benchmark"] == "epochs" and len(res["accuracies"]) == 6
    q = res["pass_rate_by_epoch"]
    assert len(q) >= 3 and q == sorted(q) and all(0 <= x <= 1 for x in q)   # the floor only drops
    assert set(res["gains"]) == {"future", "parent+1", "both"}
    assert all(g >= 0.999 for g in res["gains"].values())     # a relaxation sooner never slows a miner
    g = res["gains"]
    assert res["own_gain"] == round(max(g["future"], g["both"] / g["parent+1"]), 4)
    assert res["shared_speedup"] == g["parent+1"]
    assert res["claim"] > 0 and "genesis + 5" in res["start"]
    assert (tmp_path / "epochs-tiny.json").exists()


def test_epochs_from_a_chains_tip(bench_json, shared_data, tmp_path):
    smith = BlockSmith.open(tmp_path / "chain", dataset=shared_data)
    for _ in range(2):
        smith.next_block(submit=True)
    tip = smith.chain.tip()
    res = bench_json("epochs", "--spec", str(TINY_TEST_FILE), "--datadir", str(tmp_path / "chain"),
                     "--trajectories", "4")
    assert res["claim"] == tip.header.acc_after and f"height {tip.height}" in res["start"]


def test_epochs_refuses_another_chains_datadir(shared_data, tmp_path, capsys):
    smith = BlockSmith.open(tmp_path / "chain", dataset=shared_data)
    smith.next_block(submit=True)
    with pytest.raises(SystemExit) as exc:       # the datadir is the test chain's, the preset is tiny's
        main(["bench", "epochs", "--preset", "tiny", "--datadir", str(tmp_path / "chain"), "--trajectories", "2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "holds another chain" in err
