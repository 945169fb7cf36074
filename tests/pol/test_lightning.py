import importlib.util

import pytest

HAVE_LIGHTNING = any(importlib.util.find_spec(m) is not None for m in ("lightning", "pytorch_lightning"))


@pytest.mark.skipif(HAVE_LIGHTNING, reason="Lightning is installed")
def test_clear_error_without_lightning():
    from pol.lightning import ProofCallback  # importing the module itself must work
    with pytest.raises(ImportError, match="lightning"):
        ProofCallback("x", dataset_hash="ab" * 32, checkpoint_every=2, hyperparams={})


@pytest.mark.skipif(not HAVE_LIGHTNING, reason="Lightning is not installed")
def test_lightning_round_trip(tmp_path):
    import torch
    import torch.nn.functional as F
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl

    from pol import dataset_hash, verify_proof
    from pol.lightning import ProofCallback

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return x[i], y[i], i

    class Mod(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 3)

        def forward(self, inp):
            return self.net(inp)

        def training_step(self, batch, _):
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    torch.manual_seed(0)
    cb = ProofCallback(tmp_path / "p", dataset_hash=dataset_hash(x, y), checkpoint_every=3,
                       hyperparams={"batch_size": 16, "steps_per_epoch": 4, "seed": 0})
    loader = torch.utils.data.DataLoader(DS(), batch_size=16, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    trainer = pl.Trainer(max_epochs=2, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, accelerator="cpu")
    trainer.fit(Mod(), loader)
    assert verify_proof(tmp_path / "p", Mod, (x, y)).passed
