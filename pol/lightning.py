"""Thin PyTorch Lightning adapter around ProofRecorder (needs `lightning` or `pytorch_lightning`).

    from pol.lightning import ProofCallback
    cb = ProofCallback("proof/", dataset_hash=dataset_hash(x, y), checkpoint_every=50,
                       hyperparams={"batch_size": 64, "steps_per_epoch": len(loader), "seed": 0})
    trainer = Trainer(callbacks=[cb], ...)

Requirements (format v1): one torch.optim.SGD optimizer, no LR scheduler, no
gradient accumulation, automatic optimization, and every batch carries its
dataset indices (by default the last element of the batch, e.g. a Dataset that
returns (x, y, index)). The verifier replays `loss(module(x), y)` with the
recorded loss name, so training_step must compute exactly that.
Lightning is imported only when ProofCallback() is called.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from .recorder import ProofRecorder

_CLASS = None


def _import_lightning():
    try:
        import lightning.pytorch as pl
        return pl
    except ImportError:
        pass
    try:
        import pytorch_lightning as pl
        return pl
    except ImportError:
        raise ImportError("pol.lightning needs `lightning` or `pytorch_lightning` installed") from None


def _last(batch: Any):
    return batch[-1]


def _callback_class():
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    pl = _import_lightning()

    class ProofCallback(pl.Callback):
        def __init__(self, out_dir, *, dataset_hash: str, checkpoint_every: int,
                     hyperparams: Mapping[str, Any], model_id: str = "unspecified",
                     dataset_id: str = "unspecified", batch_indices: Callable = _last):
            super().__init__()
            self.out_dir, self.batch_indices = out_dir, batch_indices
            self.kw = dict(dataset_hash=dataset_hash, checkpoint_every=checkpoint_every,
                           hyperparams=dict(hyperparams), model_id=model_id, dataset_id=dataset_id)
            self.recorder = None

        def on_train_start(self, trainer, pl_module):
            if getattr(trainer, "accumulate_grad_batches", 1) != 1:
                raise RuntimeError("gradient accumulation is not supported by proof format v1")
            if len(trainer.optimizers) != 1:
                raise RuntimeError("exactly one optimizer is supported")
            if getattr(trainer, "lr_scheduler_configs", None):
                raise RuntimeError("learning-rate schedulers are not supported by proof format v1")
            self.recorder = ProofRecorder(self.out_dir, pl_module, trainer.optimizers[0], **self.kw)
            self.recorder.on_train_start()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            # global_step counts optimizer steps and is already incremented here
            self.recorder.on_step(trainer.global_step - 1, self.batch_indices(batch))

        def on_train_end(self, trainer, pl_module):
            self.recorder.on_end()

    _CLASS = ProofCallback
    return _CLASS


def ProofCallback(out_dir, **kwargs):
    """Build the Lightning callback (imports Lightning now; see the module docstring)."""
    return _callback_class()(out_dir, **kwargs)
