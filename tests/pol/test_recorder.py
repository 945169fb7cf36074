import pytest
import torch

from pol import ProofRecorder

DH = "ab" * 32


def _setup(tmp_path, opt_cls=torch.optim.SGD, **opt_kw):
    model = torch.nn.Linear(3, 2)
    opt = opt_cls(model.parameters(), lr=0.1, **opt_kw)
    return model, opt


def _rec(tmp_path, model, opt, **kw):
    hp = kw.pop("hyperparams", {"batch_size": 4, "steps_per_epoch": 2, "seed": 0})
    return ProofRecorder(tmp_path / "p", model, opt, dataset_hash=DH, checkpoint_every=2, hyperparams=hp, **kw)


def _step(model, opt):
    opt.zero_grad()
    model(torch.ones(4, 3)).sum().backward()
    opt.step()


def test_steps_must_be_consecutive_from_zero(tmp_path):
    model, opt = _setup(tmp_path)
    rec = _rec(tmp_path, model, opt)
    rec.on_train_start()
    with pytest.raises(ValueError):
        rec.on_step(1, [0, 1])
    _step(model, opt)
    rec.on_step(0, [0, 1])
    with pytest.raises(ValueError):
        rec.on_step(0, [0, 1])


def test_hooks_order_enforced(tmp_path):
    model, opt = _setup(tmp_path)
    rec = _rec(tmp_path, model, opt)
    with pytest.raises(RuntimeError):
        rec.on_step(0, [0])
    rec.on_train_start()
    with pytest.raises(RuntimeError):
        rec.on_end()  # no steps
    with pytest.raises(RuntimeError):
        rec.on_train_start()


def test_lr_change_refused(tmp_path):
    model, opt = _setup(tmp_path, momentum=0.9)
    rec = _rec(tmp_path, model, opt)
    rec.on_train_start()
    _step(model, opt)
    rec.on_step(0, [0])
    opt.param_groups[0]["lr"] = 0.01
    _step(model, opt)
    with pytest.raises(RuntimeError, match="schedules"):
        rec.on_step(1, [1])


@pytest.mark.parametrize("bad", [[], [-1], [0, 1, 2, 3, 4], [0.5], torch.tensor([1.0])])
def test_bad_batch_indices_refused(tmp_path, bad):
    model, opt = _setup(tmp_path)
    rec = _rec(tmp_path, model, opt)
    rec.on_train_start()
    with pytest.raises((ValueError, TypeError)):
        rec.on_step(0, bad)


def test_unsupported_setups_refused(tmp_path):
    model, opt = _setup(tmp_path, opt_cls=torch.optim.Adam)
    with pytest.raises(TypeError):
        _rec(tmp_path, model, opt)
    model, opt = _setup(tmp_path)
    with pytest.raises(ValueError):  # disagrees with the optimizer
        _rec(tmp_path, model, opt, hyperparams={"batch_size": 4, "steps_per_epoch": 2, "seed": 0, "lr": 0.2})
    with pytest.raises(ValueError):
        _rec(tmp_path, model, opt, hyperparams={"batch_size": 4, "steps_per_epoch": 2, "seed": 0, "warmup": 3})
    with pytest.raises(ValueError):
        _rec(tmp_path, model, opt, hyperparams={"batch_size": 4, "seed": 0})
    for aug in ("random-crop", {"name": "crop"}, {"name": "crop", "seed": 1, "params": {"p": 0.5}}):
        with pytest.raises(ValueError):
            _rec(tmp_path, model, opt, hyperparams={"batch_size": 4, "steps_per_epoch": 2, "seed": 0,
                                                    "augmentation": aug})
    with pytest.raises(ValueError):
        _rec(tmp_path, model, opt, model_id="../x")
    with pytest.raises(ValueError):
        ProofRecorder(tmp_path / "p", model, opt, dataset_hash="xyz", checkpoint_every=2,
                      hyperparams={"batch_size": 4, "steps_per_epoch": 2, "seed": 0})
    other = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError):
        ProofRecorder(tmp_path / "p", other, opt, dataset_hash=DH, checkpoint_every=2,
                      hyperparams={"batch_size": 4, "steps_per_epoch": 2, "seed": 0})


def test_existing_proof_not_overwritten(tmp_path):
    model, opt = _setup(tmp_path)
    rec = _rec(tmp_path, model, opt)
    rec.on_train_start()
    _step(model, opt)
    rec.on_step(0, torch.tensor([0, 1]))
    rec.on_end()
    with pytest.raises(FileExistsError):
        _rec(tmp_path, model, opt)
