"""The real CIFAR-10 sample (../shared/data/cifar10-sample, see its README): the decoder against the
real layout, and a spec for it accepted by the commands (spec, mine, verify, node).

Skipped, saying why, where the sample is absent; it is never copied into the repository.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from consensus import cifar10
from consensus.spec import ChainSpec, preset
from tests.nodeproc import NodeProc, node_env

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO.parent / "shared" / "data" / "cifar10-sample"
ARCHIVE = SAMPLE_DIR / "cifar-10-sample-binary.tar.gz"
MD5 = "d63d46157987aec1220691acfefdcc12"
PER_FILE = 1017
MEMBER_SHA_PREFIX = {"data_batch_1.bin": "ea2c7a46", "data_batch_2.bin": "57dc4e8d", "data_batch_3.bin": "be335161",
                     "data_batch_4.bin": "34046a49", "data_batch_5.bin": "e04d47ea", "test_batch.bin": "c77ad461"}

pytestmark = pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"the real CIFAR-10 sample is not at {ARCHIVE} "
                                                              f"(see ../shared/data/cifar10-sample/README.md)")


def polchain(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node.cli", "--log-level", "WARNING", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=node_env())


@pytest.fixture(scope="module")
def sample_spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "spec.json"
    res = polchain("spec", "--preset", "cifar10-resnet18", "--dataset-archive", str(ARCHIVE), "-o", str(path))
    assert res.returncode == 0, res.stderr
    assert f"--dataset-dir {SAMPLE_DIR}" in res.stderr
    return path


def test_real_layout_matches_the_decoder():
    """Member names, types and sizes as the decoder expects them: 3,073-byte records, the class names."""
    with tarfile.open(ARCHIVE, "r:gz") as tf:
        members = {m.name: m for m in tf}
        assert set(members) == {*cifar10.TRAIN_MEMBERS, cifar10.TEST_MEMBER, cifar10.META_MEMBER}
        for name, prefix in MEMBER_SHA_PREFIX.items():
            m = members[f"{cifar10.MEMBER_DIR}/{name}"]
            assert m.isreg() and m.size == PER_FILE * cifar10.RECORD_BYTES == 3_125_241
            assert hashlib.sha256(tf.extractfile(m).read()).hexdigest().startswith(prefix)
        cifar10.check_meta(tf.extractfile(members[cifar10.META_MEMBER]).read())
    assert cifar10.file_md5(ARCHIVE) == MD5


def test_decoded_images_are_cifar10():
    """Labels and pixels of the first images as published for CIFAR-10 (python version), batch order,
    R/G/B planes; classes balanced within ~20 %."""
    c = cifar10.load_cifar10(SAMPLE_DIR, md5=MD5, train_records=PER_FILE, test_records=PER_FILE)
    assert c.train_file_records == (PER_FILE,) * 5 and tuple(c.test_x.shape) == (PER_FILE, 3, 32, 32)
    assert c.train_y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]          # data_batch_1
    assert c.test_y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]           # test_batch
    assert c.train_x[0, 0, 0, :10].tolist() == [59, 43, 50, 68, 98, 119, 139, 145, 149, 149]  # red, row 0
    assert c.train_x[0, 1, 0, :5].tolist() == [62, 46, 48, 54, 73]                              # green, row 0
    assert c.test_x[0, 0, 0, :5].tolist() == [158, 159, 165, 166, 160]
    for y, n in ((c.train_y, 5 * PER_FILE), (c.test_y, PER_FILE)):
        counts = y.bincount(minlength=10).tolist()
        assert all(0.8 * n / 10 <= k <= 1.2 * n / 10 for k in counts), counts
    with pytest.raises(cifar10.DatasetError, match=r"has 3125241 bytes, expected 30730000"):
        cifar10.load_cifar10(SAMPLE_DIR, md5=MD5)  # the official counts: refused


def test_spec_names_the_sample(sample_spec):
    spec = ChainSpec.from_json(sample_spec.read_text())
    base = preset("cifar10-resnet18")
    assert spec.name == "cifar10-resnet18-sample"
    d = spec.dataset
    assert (d.id, d.train_size, d.test_size, d.archive_md5) == ("cifar10", 5 * PER_FILE, PER_FILE, MD5)
    assert d.train_sha256 and d.test_sha256
    assert dataclasses.replace(spec, name=base.name, dataset=base.dataset) == base


@pytest.mark.slow      # ResNet-18 on the real sample
def test_mine_and_verify_accept_the_spec(sample_spec, tmp_path):
    datadir = tmp_path / "chain"
    res = polchain("mine", "--spec", str(sample_spec), "--dataset-dir", str(SAMPLE_DIR), "--datadir", str(datadir),
                   "--blocks", "0")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["height"] == 0
    assert "torch threads: 1 (OMP_NUM_THREADS" in res.stderr and "cifar10-resnet18-sample" in res.stderr
    res = polchain("verify", "--datadir", str(datadir), "--dataset-dir", str(SAMPLE_DIR), "--threads", "1")
    assert res.returncode == 0 and res.stdout.startswith("OK"), res.stdout + res.stderr
    assert not any(p.name.endswith(".tar.gz") for p in datadir.rglob("*"))  # nothing copied or downloaded


def test_the_sample_is_refused_at_the_official_sizes(tmp_path):
    base = preset("cifar10-resnet18")
    spec = dataclasses.replace(base, dataset=dataclasses.replace(base.dataset, archive_md5=MD5))
    (tmp_path / "spec.json").write_text(spec.to_json())
    res = polchain("mine", "--spec", str(tmp_path / "spec.json"), "--dataset-dir", str(SAMPLE_DIR),
                   "--datadir", str(tmp_path / "chain"), "--blocks", "0")
    assert res.returncode == 2 and "expected 30730000 (10000 records" in res.stderr, res.stderr


@pytest.mark.slow      # ResNet-18 on the real sample
def test_node_runs_the_sample_spec(sample_spec, tmp_path):
    node = NodeProc(tmp_path / "node", "--spec", str(sample_spec), "--dataset-dir", str(SAMPLE_DIR))
    try:
        node.start(timeout=300)
        status = node.client.get("/status").json()
        assert status["height"] == 0
        assert status.get("chain_id", ChainSpec.from_json(sample_spec.read_text()).chain_id) == \
            ChainSpec.from_json(sample_spec.read_text()).chain_id
        assert "torch threads: 1" in node.log_text()
    finally:
        node.stop()


@pytest.mark.slow      # ResNet-18 on the real sample
def test_spec_with_lowered_difficulty_is_another_named_chain(sample_spec, tmp_path):
    """`polchain spec --k 4`: the CPU testnet's chain: k at genesis and as the minimum, its own name and id."""
    path = tmp_path / "k4.json"
    res = polchain("spec", "--preset", "cifar10-resnet18", "--dataset-archive", str(ARCHIVE), "--k", "4",
                   "-o", str(path))
    assert res.returncode == 0, res.stderr
    low, base = ChainSpec.from_json(path.read_text()), ChainSpec.from_json(sample_spec.read_text())
    assert low.name == "cifar10-resnet18-sample-k4" and low.chain_id != base.chain_id
    assert (low.difficulty.initial, low.difficulty.minimum) == (4, 4)
    assert dataclasses.replace(low, name=base.name, difficulty=base.difficulty) == base
    bad = polchain("spec", "--preset", "cifar10-resnet18", "--k", "0")
    assert bad.returncode == 2 and "--k" in bad.stderr
