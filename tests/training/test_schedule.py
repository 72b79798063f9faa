"""The recipes' learning-rate schedule (fairseq linear_decay) against its formula, step by step
through a real optimiser."""

import pytest
import torch

from mega_lra.training.schedule import WarmupLinearDecay, warmup_linear_decay


def expected(step, peak, warmup, total, init=1e-7, end=0.0, power=1.0):
    # written from the fairseq formulas in mega_paper_and_code.md §1.5
    if step <= warmup:
        return init + step**power * (peak - init) / warmup**power
    if step >= total:
        return end
    return end + (peak - end) * (total - step) / (total - warmup)


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_lr_seen_by_each_update_follows_the_formula(power):
    param = torch.nn.Parameter(torch.zeros(3))
    peak, warmup, total = 4e-3, 10, 25
    opt = torch.optim.AdamW([param], lr=peak)
    sched = warmup_linear_decay(opt, warmup_steps=warmup, total_steps=total, warmup_power=power)
    seen = []
    for _ in range(total + 3):
        seen.append(opt.param_groups[0]["lr"])
        param.grad = torch.ones(3)
        opt.step()
        sched.step()
    for step, lr in enumerate(seen):
        assert lr == pytest.approx(expected(step, peak, warmup, total, power=power), rel=1e-9)
    assert seen[0] == pytest.approx(1e-7)  # the first update uses warmup-init-lr, as fairseq
    assert seen[warmup] == pytest.approx(peak)
    assert seen[total] == 0.0 and seen[-1] == 0.0


def test_groups_with_their_own_lr_are_scaled_by_the_same_factor():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr": 1e-4}], lr=1e-3)
    sched = warmup_linear_decay(opt, warmup_steps=4, total_steps=8)
    for _ in range(6):
        opt.step()
        sched.step()
    factor = expected(6, 1e-3, 4, 8) / 1e-3
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * factor)
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-4 * factor)


def test_warmup_longer_than_training_is_clamped_and_bad_values_are_named():
    sched = WarmupLinearDecay(1.0, warmup_steps=100, total_steps=10)
    assert sched.lr(10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="optim.lr"):
        WarmupLinearDecay(0.0, 1, 10)
    with pytest.raises(ValueError, match="sched.total_steps"):
        WarmupLinearDecay(1.0, 1, 0)
