"""Model architectures, defined in-tree because they are consensus-critical.

* ``resnet18-cifar``: ResNet-18, CIFAR variant (3x3 stem, stride 1, no max-pool),
  BasicBlock [2, 2, 2, 2], 1x1 conv + BN projection shortcuts; 11,173,962
  learnable parameters.
* ``tiny-cnn``: three 3x3 conv/BN/ReLU stages and a linear head; a few thousand
  parameters, for offline testnets and tests.

Parameter order for indexing (requirements R) is ``model.parameters()`` in
definition order, each tensor flattened row-major.

Genesis weights (protocol v3) come from a generator the spec defines, not from torch's RNG (whose
floating-point draws differ between CPU kernels and torch versions): for each learnable tensor in
state-dict order, the byte stream ``SHAKE-256("polchain-genesis/3" | seed (u64 BE) | name (UTF-8))``
is read as big-endian u32 words; word ``v`` gives ``u = v >> 8`` (24 bits) and the value
``fp32((2u + 1 - 2^24) / 2^24) * fp32(1 / sqrt(fan_in))`` (one fp32 multiply), uniform on
(-bound, bound) like PyTorch's default init of conv and linear layers (kaiming-uniform with
a = sqrt(5), which gives bound = 1/sqrt(fan_in); the linear bias uses the same bound). BatchNorm
starts at weight 1, bias 0, running mean 0, running variance 1, 0 batches tracked. The spec pins
the hash of the result.
"""
from __future__ import annotations

import hashlib
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = ("resnet18-cifar", "tiny-cnn")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(32)
        self.linear = nn.Linear(32, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.relu(self.bn3(self.conv3(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def build_model(arch: str, num_classes: int = 10) -> nn.Module:
    if arch == "resnet18-cifar":
        return ResNet18Cifar(num_classes)
    if arch == "tiny-cnn":
        return TinyCNN(num_classes)
    raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")


GENESIS_DOMAIN = b"polchain-genesis/3"


def genesis_uniform(seed: int, name: str, shape: tuple[int, ...], bound: float) -> torch.Tensor:
    """``shape`` fp32 values uniform on (-bound, bound) from the spec's generator (module docstring)."""
    n = math.prod(shape)
    stream = hashlib.shake_256(GENESIS_DOMAIN + struct.pack(">Q", seed) + name.encode("utf-8")).digest(4 * n)
    u = (np.frombuffer(stream, dtype=">u4") >> np.uint32(8)).astype(np.int64)
    x = torch.from_numpy(((2 * u + 1 - (1 << 24)).astype(np.float32)) / np.float32(1 << 24))  # exact
    b = torch.tensor(bound, dtype=torch.float32)
    return (x * b).view(shape)


def genesis_init(model: nn.Module, seed: int) -> nn.Module:
    """Set every learnable tensor of ``model`` from the spec's generator (in place)."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, p in model.named_parameters():
            mod = modules[name.rpartition(".")[0]]
            if isinstance(mod, nn.BatchNorm2d):
                p.fill_(1.0 if name.endswith(".weight") else 0.0)
                continue
            fan_in = mod.weight[0].numel()
            p.copy_(genesis_uniform(seed, name, tuple(p.shape), 1.0 / math.sqrt(fan_in)))
        for name, b in model.named_buffers():
            b.fill_(1 if name.endswith("running_var") else 0)
    return model


INITS = ("polchain-genesis/3", "torch-default")


def genesis_model(arch: str, seed: int, num_classes: int = 10, init: str = INITS[0]) -> nn.Module:
    """The architecture with the genesis weights of ``seed`` (module docstring). ``init`` =
    "torch-default": PyTorch's own initialisation under ``torch.manual_seed(seed)`` (CPU RNG), as the
    DGG paper's code does; its floats differ between CPU kernels, so only the dgg-paper research
    preset uses it."""
    if init == "torch-default":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(arch, num_classes)
    if init != INITS[0]:
        raise ValueError(f"unknown genesis init {init!r} (known: {', '.join(INITS)})")
    return genesis_init(build_model(arch, num_classes), seed)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
