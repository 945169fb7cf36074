"""The exact training step of protocol v3: ``exact_sgd_step(state, images, labels, rule)``.

One SGD step of the chain's model on one batch, in the arithmetic of consensus.exact, written out
layer by layer (forward, then backward in reverse), so that its result is a function of
(W, batch) alone: the same bits on every CPU ISA level, thread count and device. docs/protocol.md
§5 specifies it; this module is that text in code, and every operation of it is listed there in
order.

* inputs: ``x = TABLE[c][u8]``, a 3 x 256 fp64 table ``(v / 255 - mean_c) / std_c`` built with
  Python's IEEE double arithmetic (no tensor kernel touches the normalisation);
* convolution (no bias): im2col (a copy), then an exact GEMM of the quantised input columns and
  the quantised kernel, rescaled; the weight gradient is an exact GEMM of the quantised output
  gradient and the same columns; the input gradient an exact GEMM then col2im (an exact sum);
* BatchNorm (train mode, per channel over N, H, W with M = N*H*W): mean = exact sum / M,
  d = x - mean, var = exact sum of squares of d / M (biased; / (M - 1) unbiased for the
  running variance), inv = 1 / sqrt(var + eps), xhat = d * inv, y = xhat * gamma + beta;
  running_mean = fp32(0.9 * rm + 0.1 * mean), running_var likewise, num_batches_tracked + 1;
* ReLU, the residual add, global average pooling (exact sum / (H*W)), the linear layer (exact GEMM
  plus bias), the cross-entropy's gradient (softmax by consensus.exact.exp_nonpositive, its sum
  over classes in class order, (p - onehot) / S);
* the update: ``w' = fp32(w - fp32(lr * fp32(g)))`` per learnable parameter, fp32 multiply then fp32
  subtract (two roundings, no FMA), no momentum, no weight decay.

Activations and gradients are fp64 between layers; parameters and buffers stay fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F

from .exact import (F64, check_exact, exact_dot_sum, exact_matmul, exact_matmul_nkl, exact_matmul_nlk, exact_sum,
                    exp_nonpositive, quantize)

State = dict[str, torch.Tensor]
BN_EPS = 1e-05          # fp64 nearest to 1e-5, added to the biased variance
BN_MOMENTUM = 0.1       # running = (1 - 0.1) * running + 0.1 * batch statistic, 0.9 as the fp64 literal
BN_KEEP = 0.9


@dataclass(frozen=True)
class Rule:
    """The numbers the exact step needs from the spec (consensus.training builds it)."""
    bits: int                   # quantised operands are integers with |q| <= 2^bits
    lr: float                   # the fp32 learning rate (a Python float holding an fp32 value)
    table: torch.Tensor         # [3, 256] fp64 normalisation table


def normalisation_table(mean: tuple[str, ...], std: tuple[str, ...]) -> torch.Tensor:
    """TABLE[c][v] = (v / 255 - mean_c) / std_c in IEEE double arithmetic (Python floats)."""
    rows = [[(v / 255.0 - float(m)) / float(s) for v in range(256)] for m, s in zip(mean, std)]
    return torch.tensor(rows, dtype=F64)


def exact_inputs(images_u8: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] fp64 inputs: a table lookup per channel (exact)."""
    idx = images_u8.to(torch.int64)
    return torch.stack([table[c][idx[:, c]] for c in range(idx.shape[1])], dim=1)


# == layers: forward returns (output, cache); backward returns the input gradient =============
def conv_forward(x, w32, stride: int, pad: int, bits: int):
    n, c, h, wd = x.shape
    o, _, kh, kw = w32.shape
    check_exact(bits, c * kh * kw)
    qx, sx = quantize(x, bits)
    qw, sw = quantize(w32, bits)
    cols = F.unfold(qx, (kh, kw), padding=pad, stride=stride)              # [N, C*kh*kw, L] (a copy)
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = exact_matmul_nkl(qw.view(o, -1), cols).mul_(sx * sw)                 # [N, O, L]
    return y.view(n, o, ho, wo), (cols, sx, qw, sw, (h, wd), (kh, kw), stride, pad)


def conv_backward(cache, dy, bits: int, need_dx: bool = True):
    cols, sx, qw, sw, (h, wd), (kh, kw), stride, pad = cache
    n, o = dy.shape[:2]
    check_exact(bits, n * cols.shape[2])
    check_exact(bits, o, overlap=kh * kw)
    qdy, sdy = quantize(dy, bits)
    qdy = qdy.reshape(n, o, -1)
    dw = exact_matmul_nlk(qdy, cols).mul_(sdy * sx)                          # [O, C*kh*kw]
    dx = None
    if need_dx:
        dcols = exact_matmul_nkl(qw.view(o, -1).t(), qdy)                   # [N, C*kh*kw, L]
        dx = F.fold(dcols, (h, wd), (kh, kw), padding=pad, stride=stride).mul_(sw * sdy)
    return dx, dw.view(qw.shape)


def bn_forward(x, gamma32, beta32, rm32, rv32, bits: int):
    n, c, h, w = x.shape
    m = n * h * w
    check_exact(bits, m)
    dims = (0, 2, 3)
    dev = x.device
    mf = torch.full((c,), float(m), dtype=F64, device=dev)
    mean = exact_sum(x, dims, bits) / mf
    d = x - mean.view(1, c, 1, 1)
    ss = exact_dot_sum(d, d, dims, bits)
    var = ss / mf
    var_unbiased = ss / torch.full((c,), float(max(m - 1, 1)), dtype=F64, device=dev)
    inv = torch.ones_like(var) / torch.sqrt(var + BN_EPS)
    xhat = d * inv.view(1, c, 1, 1)
    gamma = gamma32.to(F64)
    y = (xhat * gamma.view(1, c, 1, 1)).add_(beta32.to(F64).view(1, c, 1, 1))
    rm = (rm32.to(F64) * BN_KEEP + mean * BN_MOMENTUM).to(torch.float32)
    rv = (rv32.to(F64) * BN_KEEP + var_unbiased * BN_MOMENTUM).to(torch.float32)
    return y, (xhat, inv, gamma, mf), (rm, rv)


def bn_backward(cache, dy, bits: int):
    xhat, inv, gamma, mf = cache
    c = xhat.shape[1]
    dims = (0, 2, 3)
    dbeta = exact_sum(dy, dims, bits)
    dgamma = exact_dot_sum(dy, xhat, dims, bits)
    t = dy * mf[0]
    t.sub_(dbeta.view(1, c, 1, 1))
    t.sub_(xhat * dgamma.view(1, c, 1, 1))
    k = (gamma * inv) / mf
    return t.mul_(k.view(1, c, 1, 1)), dgamma, dbeta


def relu_backward(x_pre, dy):
    return dy.masked_fill(x_pre <= 0, 0.0)   # NaN stays NaN: a NaN state is refused anyway


def pool_forward(x, bits: int):
    n, c, h, w = x.shape
    check_exact(bits, h * w, factors=1)
    hw = torch.full((n, c), float(h * w), dtype=F64, device=x.device)
    return exact_sum(x, (2, 3), bits) / hw, (h, w)


def pool_backward(cache, dy):
    h, w = cache
    g = dy / torch.full_like(dy, float(h * w))
    return g.view(*dy.shape, 1, 1).expand(*dy.shape, h, w)


def linear_forward(x, w32, b32, bits: int):
    check_exact(bits, x.shape[1])
    qx, sx = quantize(x, bits)
    qw, sw = quantize(w32, bits)
    y = exact_matmul(qx, qw.t()) * (sx * sw) + b32.to(F64).view(1, -1)
    return y, (qx, sx, qw, sw)


def linear_backward(cache, dy, bits: int):
    qx, sx, qw, sw = cache
    check_exact(bits, dy.shape[0])
    check_exact(bits, dy.shape[1])
    qdy, sdy = quantize(dy, bits)
    dw = exact_matmul(qdy.t(), qx) * (sdy * sx)
    db = qdy.sum(dim=0) * sdy
    dx = exact_matmul(qdy, qw) * (sdy * sw)
    return dx, dw, db


def cross_entropy_grad(z, y):
    """d(mean cross-entropy)/dz for logits z [S, C] and labels y: (softmax(z) - onehot(y)) / S."""
    s, c = z.shape
    e = exp_nonpositive(z - z.amax(dim=1, keepdim=True))
    total = e[:, 0]
    for j in range(1, c):                     # class order, one IEEE add each
        total = total + e[:, j]
    p = e / total.view(s, 1)
    onehot = F.one_hot(y.to(torch.int64), c).to(F64)
    return (p - onehot) / torch.full_like(p, float(s))


# == the architectures ==========================================================================
class _Net:
    """Forward and backward over a state dict; collects gradients and new BatchNorm buffers."""

    def __init__(self, state: Mapping[str, torch.Tensor], bits: int):
        self.w, self.bits = state, bits
        self.grads: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}

    def conv_bn(self, x, conv: str, bn: str, stride: int, pad: int):
        y, cc = conv_forward(x, self.w[conv + ".weight"], stride, pad, self.bits)
        z, bc, (rm, rv) = bn_forward(y, self.w[bn + ".weight"], self.w[bn + ".bias"],
                                     self.w[bn + ".running_mean"], self.w[bn + ".running_var"], self.bits)
        self.buffers[bn + ".running_mean"] = rm
        self.buffers[bn + ".running_var"] = rv
        self.buffers[bn + ".num_batches_tracked"] = self.w[bn + ".num_batches_tracked"] + 1
        return z, (conv, bn, cc, bc)

    def conv_bn_back(self, cache, dz, need_dx: bool = True):
        conv, bn, cc, bc = cache
        dy, dgamma, dbeta = bn_backward(bc, dz, self.bits)
        self.grads[bn + ".weight"], self.grads[bn + ".bias"] = dgamma, dbeta
        dx, dw = conv_backward(cc, dy, self.bits, need_dx)
        self.grads[conv + ".weight"] = dw
        return dx

    def head(self, x, y):
        pooled, pc = pool_forward(x, self.bits)
        logits, lc = linear_forward(pooled, self.w["linear.weight"], self.w["linear.bias"], self.bits)
        dz = cross_entropy_grad(logits, y)
        dpool, self.grads["linear.weight"], self.grads["linear.bias"] = linear_backward(lc, dz, self.bits)
        return pool_backward(pc, dpool)


def _tiny_cnn(net: _Net, x, y) -> None:
    acts, caches = [], []
    for i in (1, 2, 3):
        pre, cache = net.conv_bn(x, f"conv{i}", f"bn{i}", 2, 1)
        x = torch.clamp(pre, min=0.0)
        acts.append(pre)
        caches.append(cache)
    g = net.head(x, y)
    for i in (2, 1, 0):
        g = net.conv_bn_back(caches[i], relu_backward(acts[i], g), need_dx=i > 0)


def _basic_block_forward(net: _Net, x, p: str, stride: int, projection: bool):
    pre1, c1 = net.conv_bn(x, p + "conv1", p + "bn1", stride, 1)
    h = torch.clamp(pre1, min=0.0)
    pre2, c2 = net.conv_bn(h, p + "conv2", p + "bn2", 1, 1)
    if projection:
        sc, cs = net.conv_bn(x, p + "shortcut.0", p + "shortcut.1", stride, 0)
    else:
        sc, cs = x, None
    pre = pre2 + sc
    return torch.clamp(pre, min=0.0), (pre1, c1, c2, cs, pre)


def _basic_block_backward(net: _Net, cache, g):
    pre1, c1, c2, cs, pre = cache
    g = relu_backward(pre, g)
    dh = net.conv_bn_back(c2, g)
    dx = net.conv_bn_back(c1, relu_backward(pre1, dh))
    dsc = net.conv_bn_back(cs, g) if cs is not None else g
    return dx + dsc


def _resnet18_cifar(net: _Net, x, y) -> None:
    pre, stem = net.conv_bn(x, "conv1", "bn1", 1, 1)
    x = torch.clamp(pre, min=0.0)
    caches, cin = [], 64
    for li, cout in enumerate((64, 128, 256, 512), start=1):
        for bi in (0, 1):
            stride = 2 if (bi == 0 and li > 1) else 1
            x, c = _basic_block_forward(net, x, f"layer{li}.{bi}.", stride, bi == 0 and cin != cout)
            caches.append(c)
        cin = cout
    g = net.head(x, y)
    for c in reversed(caches):
        g = _basic_block_backward(net, c, g)
    net.conv_bn_back(stem, relu_backward(pre, g), need_dx=False)


ARCHS = {"tiny-cnn": _tiny_cnn, "resnet18-cifar": _resnet18_cifar}


def exact_gradients(arch: str, state: Mapping[str, torch.Tensor], images_u8: torch.Tensor,
                    labels: torch.Tensor, rule: Rule) -> tuple[State, State]:
    """The forward and backward pass of ``exact_sgd_step`` without the update: (the fp64 gradient of
    the mean cross-entropy per learnable parameter, the new BatchNorm buffers). Pure; the step uses it,
    and tests/consensus/test_exact_gradient.py compares the gradients with autograd's."""
    net = _Net(state, rule.bits)
    x = exact_inputs(images_u8, rule.table.to(images_u8.device))
    ARCHS[arch](net, x, labels)
    return net.grads, net.buffers


def exact_sgd_step(arch: str, state: Mapping[str, torch.Tensor], images_u8: torch.Tensor,
                   labels: torch.Tensor, rule: Rule, param_names: tuple[str, ...]) -> State:
    """W' = update(W, batch): a fresh state dict (``state`` is not modified)."""
    grads, buffers = exact_gradients(arch, state, images_u8, labels, rule)
    out = dict(state)
    out.update(buffers)
    lr = torch.tensor(rule.lr, dtype=torch.float32, device=images_u8.device)
    for name in param_names:
        step32 = grads[name].to(torch.float32).mul_(lr)    # fp32(lr * fp32(g)), in a fresh tensor
        out[name] = state[name] - step32
    return out
