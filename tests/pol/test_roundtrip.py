import json
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pol import ProofRecorder, dataset_hash, model_hash, proof_summary, verify_proof
from pol import proof as P
from pol.demo import demo_dataset, demo_model, train_demo

from .conftest import EVERY, STEPS


def test_round_trip_verifies_every_segment(demo_proof, verify):
    r = verify(demo_proof)
    assert r.passed, r.format()
    assert r.reasons == []
    assert r.selected_segments == list(range(STEPS // EVERY))
    for c in r.replays:
        assert all(c.metrics.values())
        assert c.distances["l2"] < 1e-6
    assert "RESULT: VALID" in r.format()
    json.dumps(r.to_dict(), allow_nan=False)


def test_round_trip_top_q_per_epoch(demo_proof, verify):
    r = verify(demo_proof, queries_per_epoch=1)
    assert r.passed, r.format()
    assert len(r.selected_segments) == 2  # 2 epochs x Q=1
    # one segment from each epoch (4 segments of 8 steps per 32-step epoch)
    assert [s // 4 for s in r.selected_segments] == [0, 1]
    # and it is the largest update of its epoch
    ups = {int(c.name[7:-1]): float(c.detail.split("update l2=")[1].rstrip(")")) for c in r.replays}
    assert len(ups) == 2
    r_all = verify(demo_proof)
    all_ups = {int(c.name[7:-1]): float(c.detail.split("update l2=")[1].rstrip(")")) for c in r_all.replays}
    for s in r.selected_segments:
        epoch = [i for i in all_ups if i // 4 == s // 4]
        assert all_ups[s] == max(all_ups[i] for i in epoch)


def test_q2(demo_proof, verify):
    r = verify(demo_proof, queries_per_epoch=2)
    assert r.passed and len(r.selected_segments) == 4


def test_bad_q_refused(demo_proof, verify):
    for q in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            verify(demo_proof, queries_per_epoch=q)


def test_layout_and_summary(tmp_path):
    model = train_demo(tmp_path / "p", steps=20, checkpoint_every=8, seed=3)
    names = sorted(os.listdir(tmp_path / "p"))
    assert names == ["batches.safetensors", "ckpt_000000.safetensors", "ckpt_000008.safetensors",
                     "ckpt_000016.safetensors", "ckpt_000020.safetensors", "manifest.json"]  # no temp files
    m = P.load_manifest(tmp_path / "p")
    assert [c.step for c in m.checkpoints] == [0, 8, 16, 20]
    assert m.hyperparams.lr == 0.05 and m.hyperparams.momentum == 0.9 and m.hyperparams.seed == 3
    s = proof_summary(tmp_path / "p")
    assert s == {"merkle_root": m.merkle_root, "model_hash": model_hash(model.state_dict()),
                 "steps": 20, "dataset_hash": dataset_hash(*demo_dataset())}
    # momentum buffers: absent in the initial state, present afterwards
    c0, c1 = load_file(tmp_path / "p" / "ckpt_000000.safetensors"), load_file(tmp_path / "p" / "ckpt_000008.safetensors")
    assert not any(k.startswith("optim.") for k in c0)
    assert "optim.0.weight.momentum_buffer" in c1 and "model.0.weight" in c1
    assert verify_proof(tmp_path / "p", demo_model, demo_dataset()).passed


def _regression_run(out, *, momentum, nesterov, weight_decay, augmentation="none", aug_fn=None, steps=12):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(48, 5, generator=g)
    y = x @ torch.randn(5, 2, generator=g)

    def factory():
        return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))

    torch.manual_seed(1)
    model = factory()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay)
    rec = ProofRecorder(out, model, opt, dataset_hash=dataset_hash(x, y), checkpoint_every=5,
                        hyperparams={"batch_size": 16, "steps_per_epoch": 3, "seed": 7, "loss": "mse",
                                     "augmentation": augmentation})
    rec.on_train_start()
    order = torch.Generator().manual_seed(7)
    for step in range(steps):
        idx = torch.randperm(48, generator=order)[:16]
        xb = x[idx] if aug_fn is None else aug_fn(x[idx], step=step, description=augmentation)
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(xb), y[idx]).backward()
        opt.step()
        rec.on_step(step, idx.tolist())
    rec.on_end()
    return factory, (x, y)


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.5, True, 1e-3), (0.9, False, 0.0)])
def test_custom_model_mse_and_optimizer_variants(tmp_path, momentum, nesterov, wd):
    factory, data = _regression_run(tmp_path / "p", momentum=momentum, nesterov=nesterov, weight_decay=wd)
    r = verify_proof(tmp_path / "p", factory, data)
    assert r.passed, r.format()
    assert r.selected_segments == [0, 1, 2]  # steps 0-5, 5-10, 10-12 start in epochs 0, 1, 3


def _augment(x, *, step, description):
    g = torch.Generator().manual_seed(description["seed"] * 1_000_003 + step)
    return x + 0.1 * torch.randn(x.shape, generator=g)


def test_seeded_augmentation(tmp_path):
    aug = {"name": "gauss-noise", "seed": 11, "params": {"std_milli": 100}}
    factory, data = _regression_run(tmp_path / "p", momentum=0.9, nesterov=False, weight_decay=0.0,
                                    augmentation=aug, aug_fn=_augment)
    r = verify_proof(tmp_path / "p", factory, data)
    assert not r.passed and r.reasons == ["unsupported-augmentation"]
    assert not r.replays
    assert verify_proof(tmp_path / "p", factory, data, augment=_augment).passed

    def wrong(x, *, step, description):
        return x

    r = verify_proof(tmp_path / "p", factory, data, augment=wrong)
    assert r.reasons == ["replay-distance-exceeded"]
