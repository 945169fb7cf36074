"""The canonical step is portable: the same bits under every CPU kernel family and thread count.

Each configuration runs in its own process (the kernel choice is fixed at start-up):
``ATEN_CPU_CAPABILITY`` in {default (scalar), avx2, avx512 where this CPU has it} x
``ONEDNN_MAX_CPU_ISA`` in {SSE41, AVX2} x 1 and 2 torch threads, and both at their native best (avx512,
uncapped oneDNN) at 1 and 2 threads (``kernel_matrix``). In each, 9 tiny steps
(a full block's replay: J + 1) and one ResNet-18 step from genesis must give the committed known
answers of tests/known-answers-v4.json, and ``polchain verify --threads N`` (the CLI's own code, in the
same child) must pass on a tiny chain mined natively in this process's parent. The capability each child
really ran is read back from ``torch.backends.cpu.get_cpu_capability()``, so a variable that had no
effect is seen. One child per configuration does both (14 children, not 28: each start costs torch's
import and the data set).

Under protocol v2 (fp32 steps on PyTorch's kernels) the same matrix gave 5 different tiny state
hashes (docs/protocol.md, "Why v2 split").
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..test_cli_mine_verify import polchain
from ..vectors import case_spec, load

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = _cpu_flags()
CAPABILITIES = [pytest.param("default", id="aten-default"), pytest.param("avx2", id="aten-avx2"),
                pytest.param("avx512", id="aten-avx512", marks=pytest.mark.skipif(
                    "avx512f" not in FLAGS, reason="this CPU has no AVX-512: the avx512 kernels cannot run here"))]
ISAS = [pytest.param("SSE41", id="onednn-sse41"), pytest.param("AVX2", id="onednn-avx2"),
        pytest.param(None, id="onednn-native")]
THREADS = [pytest.param(1, id="1thread"), pytest.param(2, id="2threads")]


def kernel_matrix() -> list:
    """(capability, isa, threads): every ATen capability with oneDNN capped at SSE4.1 and at AVX2, each at 1 and
    2 threads, and oneDNN uncapped (AVX-512 here) only beside ATen's AVX-512, as on a machine that has it. (A
    scalar or AVX2 ATen beside an AVX-512 oneDNN is a pair no CPU runs: dropped, 24 -> 14 child processes.)"""
    out = []
    for cap in CAPABILITIES:
        for isa in ISAS:
            if isa.values[0] is None and cap.values[0] != "avx512":
                continue
            for t in THREADS:
                out.append(pytest.param(cap.values[0], isa.values[0], t.values[0], marks=cap.marks,
                                        id=f"{cap.id}-{isa.id}-{t.id}"))
    return out


MATRIX = kernel_matrix()

pytestmark = pytest.mark.skipif(not FLAGS or "avx2" not in FLAGS,
                                reason="needs an x86 CPU with AVX2 to compare its kernels with the scalar ones")

CHILD = """
import contextlib, io, json, torch
torch.set_num_threads({threads})
from consensus.data import load_dataset
from tests.vectors import case_spec, compute
data = load_dataset(case_spec("tiny").dataset, None)
tiny = compute("tiny", dataset=data)
resnet = compute("resnet18-synthetic", steps=1, evaluate=False, dataset=data)
answers = dict(capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
               tiny=tiny["after_all"], tiny_genesis=tiny["genesis"], resnet=resnet["after_1"],
               resnet_genesis=resnet["genesis"], tiny_genesis_correct=tiny["genesis_correct_on_E"])
from node.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["--log-level", "WARNING", "verify", "--datadir", {chain!r}, "--threads", "{threads}"])
print(json.dumps(dict(answers, verify_rc=rc, verify_out=out.getvalue(), verify_threads=torch.get_num_threads())))
"""


def env_for(capability: str, isa: str | None, threads: int) -> dict[str, str]:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS=str(threads),
               POLCHAIN_LOG_LEVEL="WARNING")
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa is not None:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return env


@pytest.fixture(scope="module")
def native_chain(tmp_path_factory) -> Path:
    datadir = tmp_path_factory.mktemp("portable") / "chain"
    res = subprocess.run(polchain("mine", "--preset", "tiny", "--blocks", "3", "--datadir", str(datadir),
                                  "--seed", "5"), capture_output=True, text=True, timeout=TIMEOUT,
                         env=dict(os.environ, POLCHAIN_LOG_LEVEL="WARNING", OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    return datadir


@pytest.mark.slow
@pytest.mark.parametrize("capability,isa,threads", MATRIX)
def test_known_answers_and_a_native_chain_under_every_kernel(native_chain, capability, isa, threads):
    want = load()
    res = subprocess.run([sys.executable, "-c", CHILD.format(threads=threads, chain=str(native_chain))], cwd=REPO,
                         capture_output=True, text=True, timeout=TIMEOUT, env=env_for(capability, isa, threads))
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["capability"].lower() == {"default": "default", "avx2": "avx2", "avx512": "avx512"}[capability]
    assert got["threads"] == threads
    assert got["tiny_genesis"] == want["tiny"]["genesis"]
    assert got["resnet_genesis"] == want["resnet18-synthetic"]["genesis"]
    assert got["tiny"] == want["tiny"]["after_all"], "9 tiny exact steps differ from the known answer"
    assert got["resnet"] == want["resnet18-synthetic"]["after_1"], "one ResNet-18 exact step differs"
    # the genesis block's claim (block 1's floor, pinned in the spec) holds on every kernel (fp32 evaluation)
    spec = case_spec("tiny")
    assert abs(got["tiny_genesis_correct"] - spec.evaluation.genesis_correct) <= spec.evaluation.claim_tolerance
    # the chain mined natively in the parent verifies here, with this many threads (the CLI's own default
    # for tiny is one thread: --threads makes the 2-thread configurations replay on two)
    assert got["verify_rc"] == 0, got["verify_out"]
    assert got["verify_out"].startswith("OK: 3 blocks replayed from genesis"), got["verify_out"]
    assert got["verify_threads"] == threads
