"""`polchain bench mine`: one JSON object with the ratio; the data note when CIFAR-10 is absent."""
from __future__ import annotations

import dataclasses
import json

from bench import common
from consensus.spec import preset
from node.cli import build_parser


def test_bench_mine_json(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(common, "bench_dataset", lambda spec, data_dir=None: (tiny_data, "synthetic (the spec's own)"))
    args = build_parser().parse_args(["bench", "mine", "--preset", "tiny", "--device", "cpu", "--seconds", "0.3",
                                      "--runs", "1", "--json", "--out", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1                      # one JSON object on stdout
    res = json.loads(out[0])
    assert res["benchmark"] == "mine" and res["preset"] == "tiny"
    assert res["ratio"] > 0 and res["reference"]["attempts_per_s"]["median"] > 0
    assert res["fast"]["attempts_per_s"]["median"] > 0
    assert res["machine"]["cpu"] and res["machine"]["torch"] and "gpu" in res["machine"]
    assert json.loads((tmp_path / "mine-tiny.json").read_text())["ratio"] == res["ratio"]


def test_bench_mine_table(tiny_data, capsys, monkeypatch):
    monkeypatch.setattr(common, "bench_dataset", lambda spec, data_dir=None: (tiny_data, "synthetic (the spec's own)"))
    args = build_parser().parse_args(["bench", "mine", "--preset", "tiny", "--device", "cpu", "--seconds", "0.2",
                                      "--runs", "1"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "reference (Algorithm 1)" in text and "fast (G=" in text and "ratio fast / reference" in text
    assert "machine:" in text


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
