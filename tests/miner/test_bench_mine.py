"""`polchain bench mine`: whole blocks per round, the steady-state figures in one JSON object; the data note
when CIFAR-10 is absent."""
from __future__ import annotations

import dataclasses
import json

from bench import common
from consensus.spec import preset
from node.cli import build_parser


def test_bench_mine_json(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(common, "bench_dataset", lambda spec, data_dir=None: (tiny_data, "synthetic (the spec's own)"))
    args = build_parser().parse_args(["bench", "mine", "--preset", "tiny", "--device", "cpu", "--k", "3",
                                      "--runs", "2", "--seconds", "60", "--json", "--out", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1                      # one JSON object on stdout
    res = json.loads(out[0])
    assert res["benchmark"] == "mine" and res["preset"] == "tiny" and res["k"] == 3 and res["rounds"] == 2
    for name in ("reference", "fast"):
        m = res[name]
        assert len(m["rounds"]) == 2
        # k = 3 is met within a few dozen candidates: no round reaches its 60 s cap
        assert m["blocks"] == 2 and m["capped_rounds"] == 0, m
        assert m["candidates_per_block"] == sum(r["candidates"] for r in m["rounds"]) / 2
        assert 0 < m["search_cpu_s_per_candidate"] and 0 < m["search_share_of_cpu"] <= 1
        # the search is part of a round's CPU time, beside advance steps, evaluations, confirmations
        assert sum(r["search_cpu_s"] for r in m["rounds"]) <= m["cpu_s"] + 1e-3
        assert abs(m["cpu_s_per_block"] * 2 - m["cpu_s"]) < 0.01
    assert res["ratio_cpu_per_block"] > 0 and res["ratio_search_cost_per_candidate"] > 0
    assert res["machine"]["cpu"] and res["machine"]["torch"] and "gpu" in res["machine"]
    saved = json.loads((tmp_path / "mine-tiny.json").read_text())
    assert saved["ratio_cpu_per_block"] == res["ratio_cpu_per_block"]


def test_bench_mine_table_says_when_no_block_was_found(tiny_data, capsys, monkeypatch):
    monkeypatch.setattr(common, "bench_dataset", lambda spec, data_dir=None: (tiny_data, "synthetic (the spec's own)"))
    args = build_parser().parse_args(["bench", "mine", "--preset", "tiny", "--device", "cpu", "--k", "40",
                                      "--seconds", "0.3", "--runs", "1"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "reference (Algorithm 1)" in text and "fast (G=" in text and "CPU s per valid block" in text
    assert "machine:" in text and "a miner found no block: lower --k or raise --seconds" in text


def test_generated_data_is_said(tmp_path):
    spec = preset("cifar10-resnet18")
    small = dataclasses.replace(spec, dataset=dataclasses.replace(spec.dataset, train_size=8, test_size=4))
    data, note = common.bench_dataset(small, tmp_path)       # an empty dir: no CIFAR-10, never downloaded
    assert note == common.GENERATED_CIFAR == "generated (CIFAR-10 unavailable)"
    assert tuple(data.train_x.shape) == (8, 3, 32, 32) and tuple(data.test_y.shape) == (4,)
    assert not any(tmp_path.iterdir())


def test_format_table_aligns():
    text = common.format_table(["name", "value"], [("a", 1.5), ("bbb", 12.25)])
    lines = text.splitlines()
    assert len({len(line) for line in lines[:2]}) == 1 and lines[3].endswith("12.2")
