import pytest

from pol.demo import demo_dataset, demo_model, run_demo

# 64 steps = 2 epochs of 32 steps; checkpoints every 8 -> 9 checkpoints, 8 segments
STEPS, EVERY = 64, 8


@pytest.fixture(scope="package")
def demo_proof(tmp_path_factory, _one_torch_thread):
    return run_demo(tmp_path_factory.mktemp("pol") / "proof", steps=STEPS, checkpoint_every=EVERY, seed=0)


@pytest.fixture(scope="package")
def data():
    return demo_dataset()


@pytest.fixture
def proof_copy(demo_proof, tmp_path):
    from tests.pol.util import copy_proof
    return copy_proof(demo_proof, tmp_path / "proof")


@pytest.fixture
def verify(data):
    from pol import verify_proof

    def _verify(proof_dir, **kw):
        return verify_proof(proof_dir, demo_model, data, **kw)
    return _verify
