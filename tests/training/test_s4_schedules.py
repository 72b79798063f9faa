"""The S4 recipes' schedules as general options: cosine with linear warm-up (`sched=cosine_warmup`,
HF transformers' formula) step by step, and ReduceLROnPlateau on validation accuracy
(`sched=plateau`) handed to Lightning once per epoch with its monitor, in a real fit."""

import math

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from mega_lra.training.config import compose
from mega_lra.training.module import LRAModule
from mega_lra.training.schedule import CosineWithWarmup, cosine_warmup, reduce_on_plateau


def hf_cosine(step, warmup, total):
    # transformers.get_cosine_schedule_with_warmup, num_cycles = 0.5, written out
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2.0 * 0.5 * progress)))


def test_cosine_warmup_lr_of_each_update_follows_the_formula_in_every_group():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr": 1e-3}], lr=1e-2)
    sched = cosine_warmup(opt, warmup_steps=5, total_steps=20)
    seen = []
    for _ in range(24):
        seen.append([g["lr"] for g in opt.param_groups])
        a.grad, b.grad = torch.ones(2), torch.ones(2)
        opt.step()
        sched.step()
    for step, (lr_a, lr_b) in enumerate(seen):
        factor = hf_cosine(step, 5, 20)
        assert lr_a == pytest.approx(1e-2 * factor, abs=1e-15)
        assert lr_b == pytest.approx(1e-3 * factor, abs=1e-15)
    assert seen[0][0] == 0.0 and seen[5][0] == pytest.approx(1e-2) and seen[20][0] == 0.0
    with pytest.raises(ValueError, match="sched.total_steps"):
        CosineWithWarmup(1, 0)


def test_sched_config_options_build_the_schedules():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = compose(["sched=cosine_warmup"])
    assert (cfg.sched.warmup_steps, cfg.sched.total_steps) == (1000, None)
    assert isinstance(instantiate(cfg.sched)(opt, total_steps=10).lr_lambdas[0], CosineWithWarmup)
    cfg = compose(["sched=plateau", "sched.patience=10"])
    plateau = instantiate(cfg.sched)(opt, total_steps=10)
    assert (plateau.monitor, plateau.mode, plateau.factor, plateau.patience) == (
        "val/acc",
        "max",
        0.2,
        10,
    )
    with pytest.raises(ValueError, match="sched.factor"):
        reduce_on_plateau(opt, factor=2.0)


class ConstantLogits(nn.Module):
    """Logits that never change (zero gradients): validation accuracy stays flat."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        return torch.tensor([[1.0, 0.0]]).expand(len(batch["labels"]), 2) + 0 * self.w


def loader():
    rows = [{"labels": torch.tensor(i % 2)} for i in range(8)]
    return torch.utils.data.DataLoader(rows, batch_size=4)


def test_plateau_is_stepped_per_epoch_on_val_acc_and_cuts_the_lr_after_patience(tmp_path):
    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=0.5)

    def plateau(opt, total_steps):
        return reduce_on_plateau(opt, factor=0.2, patience=1)

    module = LRAModule(ConstantLogits(), sgd, plateau, num_classes=2, total_steps=100)
    config = module.configure_optimizers()["lr_scheduler"]
    assert (config["interval"], config["monitor"], config["frequency"]) == ("epoch", "val/acc", 1)
    lrs = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(
        max_epochs=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Record()],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=loader(), val_dataloaders=loader())
    # epoch 0 sets the best; epochs 1, 2 are no better: after 2 > patience bad epochs, x 0.2
    # (then the cool-down of 0 epochs, and two more bad epochs before the next cut)
    assert lrs == pytest.approx([0.5, 0.5, 0.5, 0.1, 0.1])


def test_plateau_without_validation_keeps_the_lr_instead_of_failing(tmp_path):
    """A fit that never validates (a benchmark's) has no val/acc: the plateau step is skipped."""

    def plateau(opt, total_steps):
        return reduce_on_plateau(opt, factor=0.2, patience=0)

    module = LRAModule(
        ConstantLogits(),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.5),
        plateau,
        num_classes=2,
        total_steps=4,
    )
    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    with pytest.warns(RuntimeWarning, match="val/acc which is not available"):
        trainer.fit(module, train_dataloaders=loader())
    assert trainer.optimizers[0].param_groups[0]["lr"] == 0.5
