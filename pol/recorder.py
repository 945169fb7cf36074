"""ProofRecorder: the prover's side. Call its hooks from your training loop.

    rec = ProofRecorder(out_dir, model, optimizer, dataset_hash=dataset_hash(x, y),
                        checkpoint_every=8,
                        hyperparams={"batch_size": 32, "steps_per_epoch": 32, "seed": 0})
    rec.on_train_start()                       # checkpoint 0 (initial state)
    for step, idx in enumerate(batches):       # idx: the dataset indices of this batch
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
        rec.on_step(step, idx)                 # after optimizer.step(); checkpoints every k steps
    rec.on_end()                               # final checkpoint, batches file, manifest

Only torch.optim.SGD (momentum, dampening, weight decay, nesterov) with a single
parameter group and a constant learning rate is supported by format v1; the
optimizer's values are recorded and any change during training is refused.
The verifier replays each step exactly as above (zero_grad, forward, loss on
the recorded loss, backward, step), so the training loop must do the same.
"""
from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import save as _st_save

from consensus.hashing import is_hex_hash
from . import proof as P

_OPT_KEYS = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
_USER_KEYS = {"optimizer", "lr", "momentum", "dampening", "weight_decay", "nesterov",
              "batch_size", "steps_per_epoch", "seed", "loss", "augmentation"}


def _indices(batch_indices: Any) -> list[int]:
    if isinstance(batch_indices, torch.Tensor):
        if batch_indices.dtype.is_floating_point or batch_indices.dim() != 1:
            raise ValueError("batch_indices must be a 1-D integer tensor")
        out = batch_indices.tolist()
    else:
        out = []
        for i in batch_indices:
            if isinstance(i, bool):
                raise ValueError(f"batch index {i!r} is not an integer")
            try:
                out.append(operator.index(i))  # ints and numpy integers; floats are refused
            except TypeError:
                raise ValueError(f"batch index {i!r} is not an integer") from None
    if not out or any(i < 0 for i in out):
        raise ValueError("batch_indices must be a non-empty list of non-negative integers")
    return out


class ProofRecorder:
    def __init__(self, out_dir: str | os.PathLike, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, *, dataset_hash: str, checkpoint_every: int,
                 hyperparams: Mapping[str, Any], model_id: str = "unspecified",
                 dataset_id: str = "unspecified"):
        if not is_hex_hash(dataset_hash):
            raise ValueError("dataset_hash must be 64 lowercase hex digits (see pol.dataset_hash)")
        if type(checkpoint_every) is not int or checkpoint_every < 1:
            raise ValueError("checkpoint_every must be a positive integer")
        self.out_dir = Path(out_dir)
        if (self.out_dir / P.MANIFEST_NAME).exists():
            raise FileExistsError(f"{self.out_dir} already holds a proof")
        self.model, self.optimizer = model, optimizer
        self.dataset_hash, self.every = dataset_hash, checkpoint_every
        try:
            self.model_id = P._str_id(model_id, "model_id")
            self.dataset_id = P._str_id(dataset_id, "dataset_id")
        except P.ProofError as e:
            raise ValueError(str(e)) from None
        self._param_names = self._map_params()
        self._opt_values = self._optimizer_values()
        self.hyperparams = self._merge_hyperparams(dict(hyperparams))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.steps = 0
        self._batches: list[list[int]] = []
        self._checkpoints: list[dict] = []
        self._started = self._ended = False

    # -- setup ------------------------------------------------------------------------

    def _map_params(self) -> dict[int, str]:
        if type(self.optimizer) is not torch.optim.SGD:
            raise TypeError("format v1 supports torch.optim.SGD only")
        if len(self.optimizer.param_groups) != 1:
            raise ValueError("format v1 supports a single optimizer parameter group")
        names = {id(p): n for n, p in self.model.named_parameters()}
        trainable = {id(p) for p in self.model.parameters() if p.requires_grad}
        in_opt = [id(p) for p in self.optimizer.param_groups[0]["params"]]
        if set(in_opt) != trainable or len(in_opt) != len(trainable):
            raise ValueError("the optimizer must hold exactly the model's trainable parameters")
        return names

    def _optimizer_values(self) -> dict[str, Any]:
        g = self.optimizer.param_groups[0]
        if g.get("maximize", False):
            raise ValueError("maximize=True is not supported")
        vals = {k: g[k] for k in _OPT_KEYS}
        for k in ("lr", "momentum", "dampening", "weight_decay"):
            vals[k] = float(vals[k].item() if isinstance(vals[k], torch.Tensor) else vals[k])
        vals["nesterov"] = bool(vals["nesterov"])
        return vals

    def _merge_hyperparams(self, hp: dict) -> P.Hyperparams:
        unknown = set(hp) - _USER_KEYS
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}")
        for k in ("batch_size", "steps_per_epoch", "seed"):
            if k not in hp:
                raise ValueError(f"hyperparams must include {k!r}")
        if hp.get("optimizer", "sgd") != "sgd":
            raise ValueError("format v1 supports optimizer 'sgd' only")
        for k, v in self._opt_values.items():  # given values must agree with the optimizer
            if k in hp and (float(hp[k]) if k != "nesterov" else bool(hp[k])) != v:
                raise ValueError(f"hyperparams[{k!r}]={hp[k]!r} but the optimizer has {v!r}")
        obj = {
            "optimizer": "sgd",
            "lr": P.encode_float(self._opt_values["lr"]),
            "momentum": P.encode_float(self._opt_values["momentum"]),
            "dampening": P.encode_float(self._opt_values["dampening"]),
            "weight_decay": P.encode_float(self._opt_values["weight_decay"]),
            "nesterov": self._opt_values["nesterov"],
            "batch_size": hp["batch_size"],
            "steps_per_epoch": hp["steps_per_epoch"],
            "seed": hp["seed"],
            "loss": hp.get("loss", "cross_entropy"),
            "augmentation": hp.get("augmentation", "none"),
        }
        try:
            return P.Hyperparams.from_json(obj)
        except P.ProofError as e:
            raise ValueError(str(e)) from None

    # -- hooks ------------------------------------------------------------------------

    def on_train_start(self) -> None:
        if self._started:
            raise RuntimeError("on_train_start called twice")
        self._started = True
        self._save_checkpoint()

    def on_step(self, step: int, batch_indices: Sequence[int]) -> None:
        """Record step `step` (0-based, consecutive); call AFTER optimizer.step()."""
        if not self._started or self._ended:
            raise RuntimeError("on_step outside on_train_start() ... on_end()")
        if type(step) is not int or step != self.steps:
            raise ValueError(f"expected step {self.steps}, got {step!r} (steps are 0-based and consecutive)")
        idx = _indices(batch_indices)
        if len(idx) > self.hyperparams.batch_size:
            raise ValueError(f"batch of {len(idx)} exceeds batch_size {self.hyperparams.batch_size}")
        if self._optimizer_values() != self._opt_values:
            raise RuntimeError("optimizer hyperparameters changed during training "
                               "(learning-rate schedules are not supported by format v1)")
        self._batches.append(idx)
        self.steps += 1
        if self.steps % self.every == 0:
            self._save_checkpoint()

    def on_end(self) -> Path:
        """Write the final checkpoint (if not already saved), batches file and manifest."""
        if not self._started or self._ended:
            raise RuntimeError("on_end outside on_train_start() ... on_end()")
        if self.steps == 0:
            raise RuntimeError("no training steps were recorded")
        self._ended = True
        if self._checkpoints[-1]["step"] != self.steps:
            self._save_checkpoint()
        lengths = torch.tensor([len(b) for b in self._batches], dtype=torch.int64)
        flat = torch.tensor([i for b in self._batches for i in b], dtype=torch.int64)
        batches = {"indices": flat, "lengths": lengths}
        P.atomic_write(self.out_dir / P.BATCHES_NAME,
                       _st_save(batches, metadata={"format": "pol-batches-v1"}))
        final = P.load_tensors(self.out_dir, self._checkpoints[-1]["file"])
        manifest = {
            "format": P.FORMAT,
            "version": P.VERSION,
            "model_id": self.model_id,
            "dataset_id": self.dataset_id,
            "dataset_hash": self.dataset_hash,
            "hyperparams": self.hyperparams.to_json(),
            "checkpoint_every": self.every,
            "num_steps": self.steps,
            "model_hash": P.model_hash(P.model_tensors(final)),
            "batches": {"file": P.BATCHES_NAME, "sha256": P.tensor_hash(batches)},
            "checkpoints": self._checkpoints,
        }
        manifest["merkle_root"] = P.compute_merkle_root(manifest)
        P.parse_manifest(manifest)  # never write a manifest our own verifier would refuse
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        P.atomic_write(self.out_dir / P.MANIFEST_NAME, text.encode("utf-8"))
        return self.out_dir

    # -- checkpoints --------------------------------------------------------------------

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """Model state_dict + SGD momentum buffers as flat named tensors (CPU copies)."""
        out = {}
        for k, v in self.model.state_dict().items():
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"state_dict entry {k!r} is not a tensor")
            out[P.MODEL_PREFIX + k] = v.detach().to("cpu", copy=True).contiguous()
        for p in self.optimizer.param_groups[0]["params"]:
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                name = self._param_names[id(p)]
                out[P.OPTIM_PREFIX + name + P.MOMENTUM_SUFFIX] = buf.detach().to("cpu", copy=True).contiguous()
        return out

    def _save_checkpoint(self) -> None:
        tensors = self.checkpoint_tensors()
        name = f"ckpt_{self.steps:06d}.safetensors"
        data = _st_save(tensors, metadata={"format": "pol-checkpoint-v1", "step": str(self.steps)})
        P.atomic_write(self.out_dir / name, data)
        self._checkpoints.append({"step": self.steps, "file": name, "sha256": P.tensor_hash(tensors)})
