"""Every kind of tampering must fail verification with its specific reason code."""
import os

import pytest
import torch

from pol import ProofError, proof_summary, verify_proof
from pol.demo import demo_model

from .util import (edit_tensors, flip_data_byte, noise_like, read_manifest, replay_checks, reseal,
                   write_manifest)


def _fails_with(report, reason):
    assert not report.passed, report.format()
    assert reason in report.reasons, report.format()
    assert "RESULT: INVALID" in report.format()


# ---- checkpoints

def test_checkpoint_tensor_byte_flipped(proof_copy, verify):
    flip_data_byte(proof_copy, "ckpt_000024.safetensors", offset_in_data=101)
    r = verify(proof_copy)
    _fails_with(r, "bad-checkpoint-hash")
    assert r.reasons == ["bad-checkpoint-hash"]
    bad = [c.name for c in r.checks if not c.passed]
    assert bad == ["checkpoint[3]"]
    assert not r.replays  # nothing is replayed against unverified data
    with pytest.raises(ProofError):
        flip_data_byte(proof_copy, "ckpt_000064.safetensors")
        proof_summary(proof_copy)


def test_checkpoint_value_edited_and_resealed_is_caught_by_replay(proof_copy, verify):
    # a dishonest prover can recompute every hash and the root; the replay still fails
    edit_tensors(proof_copy, "ckpt_000024.safetensors",
                 lambda t: t["model.2.weight"].add_(noise_like(t["model.2.weight"], 1e-2)))
    reseal(proof_copy)
    r = verify(proof_copy)
    _fails_with(r, "replay-distance-exceeded")
    failed = sorted(n for n, c in replay_checks(r).items() if not c.passed)
    assert failed == ["replay[2]", "replay[3]"]  # into and out of the forged state
    assert replay_checks(r)["replay[1]"].passed and replay_checks(r)["replay[4]"].passed


def test_final_model_swapped_and_resealed(proof_copy, verify):
    torch.manual_seed(123)
    other = {f"model.{k}": v for k, v in demo_model().state_dict().items()}
    edit_tensors(proof_copy, "ckpt_000064.safetensors", lambda t: t.update(other))
    reseal(proof_copy)
    r = verify(proof_copy, queries_per_epoch=1)
    # the last segment holds the largest update of epoch 1 now, so Q=1 samples it
    _fails_with(r, "replay-distance-exceeded")
    assert 7 in r.selected_segments


def test_missing_checkpoint_and_symlink(proof_copy, verify, tmp_path):
    os.remove(proof_copy / "ckpt_000008.safetensors")
    _fails_with(verify(proof_copy), "missing-file")
    outside = tmp_path / "outside.safetensors"
    os.replace(proof_copy / "ckpt_000016.safetensors", outside)
    os.symlink(outside, proof_copy / "ckpt_000016.safetensors")
    r = verify(proof_copy)
    assert "bad-file" in r.reasons and not r.passed


def test_checkpoint_with_wrong_tensor_names_resealed(proof_copy, verify):
    edit_tensors(proof_copy, "ckpt_000008.safetensors", lambda t: t.update(extra=torch.zeros(3)))
    reseal(proof_copy)
    r = verify(proof_copy)
    _fails_with(r, "bad-checkpoint")


# ---- data order

def test_batches_file_byte_flipped(proof_copy, verify):
    flip_data_byte(proof_copy, "batches.safetensors", offset_in_data=8 * 40)
    r = verify(proof_copy)
    _fails_with(r, "bad-batch-hash")
    assert r.reasons == ["bad-batch-hash"]


def test_one_batch_index_changed_and_resealed(proof_copy, verify, data):
    # step 21 lies in segment 2 (steps 16..24)
    edit_tensors(proof_copy, "batches.safetensors",
                 lambda t: t["indices"].__setitem__(21 * 32 + 5, (int(t["indices"][21 * 32 + 5]) + 1) % len(data[0])))
    reseal(proof_copy)
    r = verify(proof_copy)
    _fails_with(r, "replay-distance-exceeded")
    assert r.reasons == ["replay-distance-exceeded"]
    assert [n for n, c in replay_checks(r).items() if not c.passed] == ["replay[2]"]


def test_batch_index_out_of_range(proof_copy, verify, data):
    edit_tensors(proof_copy, "batches.safetensors", lambda t: t["indices"].__setitem__(3, len(data[0])))
    reseal(proof_copy)
    r = verify(proof_copy)
    _fails_with(r, "bad-batch-index")
    assert "step 0" in [c for c in r.checks if c.name == "batches"][0].detail


def test_batch_lengths_inconsistent(proof_copy, verify):
    edit_tensors(proof_copy, "batches.safetensors", lambda t: t["lengths"].__setitem__(0, 33))
    reseal(proof_copy)
    _fails_with(verify(proof_copy), "bad-batch-index")


# ---- data

def test_data_changed(proof_copy, data):
    x, y = data[0].clone(), data[1].clone()
    x[500, 7] += 1e-3
    _fails_with(verify_proof(proof_copy, demo_model, (x, y)), "bad-data-hash")
    y2 = data[1].clone()
    y2[0] = (y2[0] + 1) % 4
    _fails_with(verify_proof(proof_copy, demo_model, (data[0], y2)), "bad-data-hash")
    _fails_with(verify_proof(proof_copy, demo_model, (data[0][:-1], data[1][:-1])), "bad-data-hash")


# ---- manifest

def test_hyperparameter_changed(proof_copy, verify):
    obj = read_manifest(proof_copy)
    obj["hyperparams"]["lr"] = "0.06"
    write_manifest(proof_copy, obj)
    r = verify(proof_copy)
    _fails_with(r, "bad-merkle-root")
    assert r.reasons == ["bad-merkle-root"]
    # re-rooted by a dishonest prover: the replay with the claimed lr diverges
    reseal(proof_copy)
    r = verify(proof_copy, queries_per_epoch=1)
    _fails_with(r, "replay-distance-exceeded")
    assert all(not c.passed for c in r.replays)


def test_merkle_root_edited(proof_copy, verify):
    obj = read_manifest(proof_copy)
    obj["merkle_root"] = ("0" if obj["merkle_root"][0] != "0" else "1") + obj["merkle_root"][1:]
    write_manifest(proof_copy, obj)
    r = verify(proof_copy)
    _fails_with(r, "bad-merkle-root")
    with pytest.raises(ProofError):
        proof_summary(proof_copy)


@pytest.mark.parametrize("field,value", [("dataset_hash", "cd" * 32), ("model_id", "other-mlp"),
                                         ("model_hash", "ef" * 32)])
def test_committed_fields_edited(proof_copy, verify, field, value):
    obj = read_manifest(proof_copy)
    obj[field] = value
    write_manifest(proof_copy, obj)
    _fails_with(verify(proof_copy), "bad-merkle-root")


def test_checkpoint_entries_swapped(proof_copy, verify):
    obj = read_manifest(proof_copy)
    c = obj["checkpoints"]
    c[2]["file"], c[3]["file"] = c[3]["file"], c[2]["file"]
    c[2]["sha256"], c[3]["sha256"] = c[3]["sha256"], c[2]["sha256"]
    write_manifest(proof_copy, obj)
    _fails_with(verify(proof_copy), "bad-merkle-root")


def _set(path, value):
    def mutate(obj):
        *head, last = path
        for k in head:
            obj = obj[k]
        if value is KeyError:
            del obj[last]
        else:
            obj[last] = value
    return mutate


@pytest.mark.parametrize("mutate", [
    _set(["hyperparams", "lr"], 0.05),            # a JSON float: refused
    _set(["hyperparams", "lr"], "0.050"),         # non-canonical decimal
    _set(["hyperparams", "lr"], "0.0"),
    _set(["hyperparams", "momentum"], "1.0"),
    _set(["hyperparams", "batch_size"], 0),
    _set(["hyperparams", "batch_size"], True),
    _set(["hyperparams", "optimizer"], "adam"),
    _set(["hyperparams", "augmentation"], "random-crop"),
    _set(["hyperparams", "schedule"], "cosine"),
    _set(["version"], True),
    _set(["version"], 2),
    _set(["num_steps"], 65),
    _set(["num_steps"], "64"),
    _set(["checkpoint_every"], 16),
    _set(["checkpoints", 1, "step"], 9),
    _set(["checkpoints", 2, "file"], "ckpt_000008.safetensors"),   # duplicate file
    _set(["checkpoints", 2, "sha256"], "AB" * 32),
    _set(["extra"], 1),
    _set(["merkle_root"], KeyError),
])
def test_malformed_manifest(proof_copy, verify, mutate):
    obj = read_manifest(proof_copy)
    mutate(obj)
    write_manifest(proof_copy, obj)
    r = verify(proof_copy)
    assert r.reasons == ["bad-manifest"], r.format()
    assert [c.name for c in r.checks] == ["manifest"]


@pytest.mark.parametrize("text", ["", "{", "[]", '{"a": NaN}', '{"a": 1, "a": 2}', "\xff"])
def test_unparseable_manifest(proof_copy, verify, text):
    (proof_copy / "manifest.json").write_bytes(text.encode("latin-1"))
    assert verify(proof_copy).reasons == ["bad-manifest"]


def test_missing_manifest(tmp_path, verify):
    assert verify(tmp_path / "nothing-here").reasons == ["bad-manifest"]


@pytest.mark.parametrize("name", ["../ckpt_000000.safetensors", "/etc/passwd", "sub/ckpt.safetensors",
                                  "..safetensors", ".hidden.safetensors", "a\\b.safetensors",
                                  "ckpt_000000.safetensors\x00", "manifest.json", "", 7, None,
                                  "ckpt..000000.safetensors"])
def test_path_traversal_refused(proof_copy, verify, name):
    for where in ("checkpoint", "batches"):
        obj = read_manifest(proof_copy)
        if where == "checkpoint":
            obj["checkpoints"][0]["file"] = name
        else:
            obj["batches"]["file"] = name
        write_manifest(proof_copy, obj)
        r = verify(proof_copy)
        assert r.reasons == ["bad-manifest"], r.format()
        assert "refused file name" in r.checks[0].detail
        with pytest.raises(ProofError):
            proof_summary(proof_copy)
