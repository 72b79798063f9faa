"""Sequence norms: formulas, a real RMSNorm (and HF's non-normalising one on request), and
BatchNorm statistics with or without padded positions."""

import pytest
import torch

from mega_lra.layers.norms import SequenceNorm


def test_scalenorm_formula():
    norm = SequenceNorm("scalenorm", 6).double()
    with torch.no_grad():
        norm.norm.scalar.fill_(1.7)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    expected = 1.7 * x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(norm(x), expected)


def test_rmsnorm_normalises_and_scales_per_feature():
    norm = SequenceNorm("rmsnorm", 6).double()
    weight = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    with torch.no_grad():
        norm.norm.weight.copy_(weight)
    x = 10 * torch.randn(2, 5, 6, dtype=torch.float64)
    y = norm(x)
    rms = torch.sqrt(((y / weight) ** 2).mean(-1))
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-6, atol=1e-6)


def test_rmsnorm_hf_compat_reproduces_hf_bug():
    norm = SequenceNorm("rmsnorm", 6, rmsnorm_hf_compat=True).double()
    with torch.no_grad():
        norm.norm.weight.uniform_(0.5, 2)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(norm(x), x * norm.norm.weight)


def test_layernorm_matches_torch():
    norm = SequenceNorm("layernorm", 6).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    ref = torch.nn.functional.layer_norm(x, (6,), eps=1e-5)
    torch.testing.assert_close(norm(x), ref)


def test_batchnorm_default_includes_padding_like_the_original():
    norm = SequenceNorm("batchnorm", 4).double().train()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    mask = torch.ones(2, 6)
    mask[1, 3:] = 0
    ref = torch.nn.functional.batch_norm(
        x.transpose(1, 2), None, None, training=True, eps=1e-5
    ).transpose(1, 2)
    torch.testing.assert_close(norm(x, mask.bool()), ref)


def test_batchnorm_can_exclude_padding_from_statistics():
    norm = SequenceNorm("batchnorm", 4, exclude_padding=True).double().train()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    y = norm(x, mask)
    real = x[mask]  # (9, 4)
    mean, var = real.mean(0), real.var(0, unbiased=False)
    torch.testing.assert_close(y[mask], (real - mean) / torch.sqrt(var + 1e-5))
    # padding values never matter
    x2 = x.clone()
    x2[1, 3:] = 1e3
    norm2 = SequenceNorm("batchnorm", 4, exclude_padding=True).double().train()
    torch.testing.assert_close(norm2(x2, mask)[mask], y[mask])
    # running statistics are updated from real positions only (unbiased variance)
    torch.testing.assert_close(norm.norm.running_mean, 0.1 * mean)
    torch.testing.assert_close(norm.norm.running_var, 0.9 + 0.1 * real.var(0, unbiased=True))


def test_unknown_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="normalization type 'groupnorm'"):
        SequenceNorm("groupnorm", 4)


def test_masked_batchnorm_without_padding_equals_torch_batchnorm():
    norm = SequenceNorm("batchnorm", 4, exclude_padding=True).double().train()
    ref = torch.nn.BatchNorm1d(4).double().train()
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    y = norm(x, torch.ones(3, 7, dtype=torch.bool))
    torch.testing.assert_close(y, ref(x.transpose(1, 2)).transpose(1, 2))
    torch.testing.assert_close(norm.norm.running_var, ref.running_var)
    norm.eval()
    ref.eval()
    torch.testing.assert_close(norm(x), ref(x.transpose(1, 2)).transpose(1, 2))


def test_syncbatchnorm_excluding_padding_syncs_over_processes(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        norm = SequenceNorm("syncbatchnorm", 4, exclude_padding=True).double().train()
        plain = SequenceNorm("batchnorm", 4, exclude_padding=True).double().train()
        x = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
        mask = torch.ones(2, 6, dtype=torch.bool)
        mask[0, 4:] = False
        y = norm(x, mask)
        torch.testing.assert_close(y, plain(x, mask))
        y.sum().backward()  # the all-reduce is differentiable
        assert x.grad is not None
    finally:
        dist.destroy_process_group()
    # outside a process group, the default syncbatchnorm is plain BatchNorm
    sync = SequenceNorm("syncbatchnorm", 4).double().train()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    ref = torch.nn.functional.batch_norm(x.transpose(1, 2), None, None, training=True, eps=1e-5)
    torch.testing.assert_close(sync(x), ref.transpose(1, 2))
