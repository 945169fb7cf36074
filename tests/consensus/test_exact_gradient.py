"""The exact step's hand-written backward is the gradient (issue #29, item 6).

``consensus.exact_step`` writes each network's forward and backward out by hand; ``consensus.model``
defines the same networks as nn.Modules, linked to it only by state-dict names. The known answers were
computed by the exact step, so a wrong backward would pass them all and merely train worse. Here, for
the tiny preset's network and for ResNet-18, on one chain batch (S = 4, derived by ``derive_batch``
from the genesis block, inputs through the step's own normalisation table), the exact step's
gradients (``exact_gradients``, the pass ``exact_sgd_step`` applies) are compared with autograd's
fp64 gradients of the nn.Module (``.double()``, the same state, train-mode BatchNorm, mean
cross-entropy), every learnable tensor of it.

Tolerance. The exact step rounds every operand of a reduction to B = ``exact_bits`` (15) bits per
tensor (docs/protocol.md §4.1): an element moves by at most half a step, 2^(e-B-1) <= max|x| * 2^-B,
so each quantisation perturbs its tensor by about 2^-B relative (3.05e-5 for B = 15). Everything else
is fp64 (1e-16). Along the longest path from the loss to a parameter's gradient, a conv + BatchNorm
layer quantises 4 operands forward (the conv's input and kernel, the BatchNorm's x and d) and 4
backward (g for dbeta, g and xhat for dgamma, g for the conv), and the head 4 (pool, linear x and W,
linear g): n_q = 8 L + 4 quantisations for L conv layers on the path (tiny: L = 3, n_q = 28; ResNet-18:
L = 17, n_q = 140). Adding their errors linearly (a budget, not a proof: layer gains are near 1 here)
gives the per-tensor bound ``||g_exact - g_ref|| / ||g_ref|| <= n_q * 2^-B`` (tiny 8.5e-4, ResNet-18
4.3e-3), and ``1 - cos <= (n_q * 2^-B)^2`` for the direction. Measured on this batch: tiny at most
2.5e-4, ResNet-18 at most 1.1e-3 (1 - cos 3e-8 and 6e-7). One-line changes to the backward fail here,
the worst tensor 14 to 17,000 times the tolerance: BatchNorm's ``t = dy * M`` as ``dy * (M - 1)``
(rel 0.02 tiny, 0.06 ResNet-18), its ``- xhat * dgamma`` term dropped (0.3 to 0.6), gamma dropped from
its factor, the ReLU mask inverted, a 3x3 kernel's gradient transposed, the shortcut's gradient dropped,
pooling's or the loss's division dropped (rel 15 and 3: only the norm check sees a pure scale).
``x_pre <= 0`` as ``x_pre < 0`` in the ReLU backward passes, as it should: it differs only where a
pre-activation is exactly zero.

ReLU kinks. Quantisation moves a pre-activation by up to ~1e-3 of its tensor's maximum (ResNet-18's
deepest layers), so a few of ResNet-18's 2.2 million ReLU inputs (171 on this batch) land on the
other side of zero than in fp64. At a kink either side's derivative is a gradient of *that* forward,
but these few flips alone move the fp64 gradients of the early layers by up to 8 %: the exact backward
is the gradient of the exact forward, whose masks differ there. So the reference takes each ReLU's
mask from the exact step's pre-activation (its values stay fp64), and the forward is checked
separately: every ReLU input of the exact step is within ``tol * max|x|`` of fp64's elementwise, so
masks differ only where the pre-activation is within the quantisation error of zero. A mutated
``relu_backward`` still fails: the mask the reference uses is ``pre > 0``, not what the backward did.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest

from consensus import exact_step
from consensus.block import genesis_header
from consensus.model import build_model
from consensus.proof import derive_batch
from consensus.training import genesis_state

from ..vectors import MINER_KEY, case_spec

LAYERS_ON_PATH = {"tiny": 3, "resnet18-synthetic": 17}     # conv + BatchNorm layers, loss to the stem


def tolerance(case: str, bits: int) -> float:
    """n_q * 2^-B, n_q = 8 L + 4 quantisations on the longest path (module docstring)."""
    return (8 * LAYERS_ON_PATH[case] + 4) * 2.0 ** -bits


def moved_state(spec) -> dict[str, torch.Tensor]:
    """Genesis with BatchNorm's gamma and beta moved off 1 and 0 (deterministically), so a backward that
    forgot gamma, or beta's path, is not hidden by the genesis values."""
    state = genesis_state(spec)
    gen = torch.Generator().manual_seed(29)
    bn = {name.rpartition(".")[0] for name, t in state.items() if name.endswith("running_mean")}
    for name, t in state.items():
        layer, _, leaf = name.rpartition(".")
        if layer in bn and leaf == "weight":
            state[name] = (1 + 0.25 * (2 * torch.rand(t.shape, generator=gen, dtype=torch.float64) - 1)).float()
        elif layer in bn and leaf == "bias":
            state[name] = (0.1 * (2 * torch.rand(t.shape, generator=gen, dtype=torch.float64) - 1)).float()
    return state


def rel_and_cos(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(||a - b|| / ||b||, 1 - cos(a, b)) of the flattened tensors, in fp64."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    return float((a - b).norm() / b.norm()), float(1 - (a @ b) / (a.norm() * b.norm()))


@pytest.mark.parametrize("case", ["tiny", "resnet18-synthetic"])
def test_exact_backward_is_the_gradient(case, tiny_dataset, monkeypatch):
    data = tiny_dataset     # the ResNet-18 case trains on the tiny preset's data too (tests/vectors.py)
    spec = case_spec(case)
    bits = spec.training.exact_bits
    tol = tolerance(case, bits)
    parent = genesis_header(spec)
    idx = torch.tensor(derive_batch(spec, parent.hash, MINER_KEY, 0, 0))
    images, labels = data.train_x[idx], data.train_y[idx].to(torch.int64)
    assert images.shape == (4, 3, 32, 32)
    state = moved_state(spec)
    rule = exact_step.Rule(bits, float(torch.tensor(spec.lr, dtype=torch.float32)),
                           exact_step.normalisation_table(spec.training.mean, spec.training.std))

    # the exact step, its ReLU inputs recorded (relu_backward is called in reverse forward order)
    pre_exact: list[torch.Tensor] = []
    relu_backward = exact_step.relu_backward

    def spy(x_pre, dy):
        pre_exact.append(x_pre.clone())
        return relu_backward(x_pre, dy)

    monkeypatch.setattr(exact_step, "relu_backward", spy)
    grads, _ = exact_step.exact_gradients(spec.model.arch, state, images, labels, rule)
    monkeypatch.setattr(exact_step, "relu_backward", relu_backward)
    pre_exact.reverse()

    # autograd in fp64 on the nn.Module: the same state, inputs (the step's table), BatchNorm mode, loss;
    # each ReLU takes the exact forward's mask (module docstring) and its own fp64 input is recorded
    model = build_model(spec.model.arch, spec.model.num_classes).double().train()
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    pre_ref: list[torch.Tensor] = []

    def relu(t, inplace=False):
        i = len(pre_ref)
        pre_ref.append(t.detach().clone())
        assert i < len(pre_exact) and pre_exact[i].shape == t.shape, f"ReLU {i}: the two forwards differ in shape"
        return t * (pre_exact[i] > 0).to(t.dtype)

    x = exact_step.exact_inputs(images, rule.table)
    monkeypatch.setattr(F, "relu", relu)
    loss = F.cross_entropy(model(x), labels)
    monkeypatch.undo()
    names = [n for n, _ in model.named_parameters()]
    ref = dict(zip(names, torch.autograd.grad(loss, list(model.parameters()))))

    # the forward: every ReLU input within tol * max|x| of fp64's, elementwise
    assert len(pre_ref) == len(pre_exact), (len(pre_ref), len(pre_exact))
    forward, flips = 0.0, 0
    for i, (a, b) in enumerate(zip(pre_exact, pre_ref)):
        err = float((a - b).abs().max() / b.abs().max())
        assert err <= tol, f"{case}: ReLU input {i} of the exact forward is {err:.3e} of its max off fp64's ({tol:.2e})"
        forward, flips = max(forward, err), flips + int(((a > 0) != (b > 0)).sum())

    # the backward: every learnable tensor, and nothing else
    assert set(grads) == set(ref), f"{case}: gradient names differ: {sorted(set(grads) ^ set(ref))}"
    assert all(grads[n].dtype == torch.float64 and grads[n].shape == ref[n].shape for n in names)
    report = {n: rel_and_cos(grads[n], ref[n]) for n in names}
    bad = {n: f"rel {r:.3e}, 1-cos {c:.3e}" for n, (r, c) in report.items() if not (r <= tol and c <= tol * tol)}
    worst = max(report, key=lambda n: report[n][0])
    assert not bad, (f"{case}: the exact backward is not autograd's gradient (tol {tol:.2e} relative, "
                     f"1-cos <= {tol * tol:.2e}): {bad}")
    print(f"\n{case}: worst relative error {report[worst][0]:.3e} ({worst}), worst 1-cos "
          f"{max(c for _, c in report.values()):.3e}, tol {tol:.2e}; forward {forward:.3e} of max, "
          f"{flips} ReLU masks flipped")


def test_the_step_applies_these_gradients(tiny_dataset):
    """exact_sgd_step is exact_gradients plus ``w' = fp32(w - fp32(lr * fp32(g)))`` (tiny: one step)."""
    spec = case_spec("tiny")
    idx = torch.tensor(derive_batch(spec, genesis_header(spec).hash, MINER_KEY, 0, 0))
    images, labels = tiny_dataset.train_x[idx], tiny_dataset.train_y[idx].to(torch.int64)
    state = moved_state(spec)
    rule = exact_step.Rule(spec.training.exact_bits, float(torch.tensor(spec.lr, dtype=torch.float32)),
                           exact_step.normalisation_table(spec.training.mean, spec.training.std))
    names = tuple(n for n, _ in build_model(spec.model.arch).named_parameters())
    grads, buffers = exact_step.exact_gradients(spec.model.arch, state, images, labels, rule)
    new = exact_step.exact_sgd_step(spec.model.arch, state, images, labels, rule, names)
    lr = torch.tensor(rule.lr, dtype=torch.float32)
    assert set(new) == set(state)
    for name in state:
        want = state[name] - grads[name].float() * lr if name in names else buffers.get(name, state[name])
        assert torch.equal(new[name], want), name
