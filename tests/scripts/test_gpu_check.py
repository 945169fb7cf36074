"""scripts/gpu-check.sh and scripts/gpu_check.py without a GPU.

The script itself only runs on a CUDA machine; here it must fail fast with a clear message, and its
measuring functions (device-generic) run on the CPU at toy sizes with the tiny preset, so a GPU box
does not find the first bug.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
import torch

from consensus.spec import preset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would really run")
def test_fails_fast_without_cuda(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out")}
    res = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 3
    assert "no CUDA GPU visible to torch" in res.stderr and "nothing measured" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_python_part_refuses_without_cuda(gpu_check, capsys):
    assert gpu_check.main(["--agreement", "1"]) == 3
    assert "no CUDA device visible" in capsys.readouterr().err


def test_measurements_run_on_cpu(gpu_check, tiny_spec, tiny_dataset):
    cpu = torch.device("cpu")
    ref = gpu_check.reference_rate(tiny_spec, tiny_dataset, cpu, 0.3, k=2)
    assert ref["attempts_per_s"] > 0 and ref["flops_per_attempt"] > 0
    fast = gpu_check.fast_rate(tiny_spec, tiny_dataset, cpu, 0.3, k=2, groups=8)
    assert fast["passes"] >= 1 and fast["flops_per_pass_lower_bound"] > ref["flops_per_attempt"]
    val = gpu_check.validation_time(tiny_spec, tiny_dataset, cpu, 2, k=2)
    assert 0 < val["two_evaluations_median"] <= val["seconds_median"]


def test_agreement_loop_on_cpu(tiny_spec, tiny_dataset):
    """CPU against CPU (replays in two spawned worker processes): every step that cleared the margin
    is accepted with identical changes; the counters add up."""
    from bench.agreement import agreement
    a = agreement(tiny_spec, tiny_dataset, torch.device("cpu"), target=12, k=2, budget_s=120, acc_checks=2,
                  per_w=8, workers=2)
    assert a["target_reached"] and a["cleared_margin"] == 12 and a["cpu_agrees"] == 12 and a["agreement"] == 1.0
    assert a["cpu_agrees_with_margin"] == 12 and a["disagreements"] == []
    assert a["device_steps"] >= 12 and a["w_versions"] >= 2 and a["max_relative_change_difference"] == 0.0
    assert a["accuracy_agree"] == 2 and len(a["accuracy_checks"]) == 2


def test_uses_the_real_sample_when_there(gpu_check, tmp_path):
    sample = REPO.parent / "shared" / "data" / "cifar10-sample"
    if not any(sample.glob("*.tar.gz")):
        pytest.skip(f"no CIFAR-10 sample in {sample} (see its README)")
    assert gpu_check.find_sample(str(tmp_path)) == sample  # an empty directory is passed over
    spec, data, note = gpu_check.spec_and_data(sample)
    assert spec.name == "cifar10-resnet18-sample" and note.startswith("real CIFAR-10 sample")
    assert tuple(data.test_x.shape) == (1017, 3, 32, 32)
    assert spec.training == preset("cifar10-resnet18").training
