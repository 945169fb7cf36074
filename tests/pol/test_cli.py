import argparse
import json

from pol import proof_summary
from pol.cli import add_commands, main

from .util import flip_data_byte, read_manifest, reseal


def test_verify_ok_text_and_json(demo_proof, capsys):
    assert main(["verify", str(demo_proof), "--queries", "1"]) == 0
    out = capsys.readouterr().out
    assert "RESULT: VALID" in out and "replay[" in out and "dataset-hash" in out
    assert main(["verify", str(demo_proof), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["passed"] is True and rep["reasons"] == []
    assert {c["name"] for c in rep["checks"]} >= {"manifest", "merkle-root", "dataset-hash", "batches"}


def test_verify_tampered_exits_1(proof_copy, capsys):
    flip_data_byte(proof_copy, "ckpt_000016.safetensors")
    assert main(["verify", str(proof_copy)]) == 1
    assert "bad-checkpoint-hash" in capsys.readouterr().out
    (proof_copy / "manifest.json").write_text("{")
    assert main(["verify", str(proof_copy), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["reasons"] == ["bad-manifest"]


def test_verify_unknown_model_exits_2(proof_copy, capsys):
    reseal(proof_copy, lambda obj: obj.update(model_id="resnet20"))
    assert main(["verify", str(proof_copy)]) == 2
    assert "verify_proof" in capsys.readouterr().err


def test_demo_then_verify_through_project_parser(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="polchain")
    add_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "demo"
    args = parser.parse_args(["pol", "demo", "--out", str(out), "--steps", "24", "--every", "6"])
    assert args.func(args) == 0
    assert proof_summary(out)["merkle_root"] in capsys.readouterr().out
    assert read_manifest(out)["checkpoint_every"] == 6
    args = parser.parse_args(["pol", "verify", str(out), "--queries", "2"])
    assert args.func(args) == 0
    args = parser.parse_args(["pol", "demo", "--out", str(out)])
    assert args.func(args) == 1  # refuses to overwrite an existing proof
    args = parser.parse_args(["pol"])
    assert args.func(args) == 2
