"""Mega on the card: the EMA against its explicit sum, decoding against the full forward, and a
20-step training loss curve of a tiny model in float32 against the CPU float64 curve. The CUDA
variants carry the `gpu` marker; the CPU float32 variant of the curve checks the test itself."""

import pytest
import torch

from mega_lra import MegaConfig, MegaForSequenceClassification
from mega_lra.layers.ema import MultiDimensionDampedEMA
from tests.gpu_helpers import DEVICES, requires_cuda
from tests.helpers import TinyLM, naive_ema, perturb_, tiny_config


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("truncation", [None, 6])
def test_cuda_ema_matches_explicit_double_sum(bidirectional, truncation):
    torch.manual_seed(0)
    ema = MultiDimensionDampedEMA(5, 3, bidirectional=bidirectional, truncation=truncation)
    with torch.no_grad():
        ema.damping_factor.normal_(0.0, 1.0)
        ema.decay_factor.normal_(0.0, 1.0)
    ema = ema.double()
    x = torch.randn(2, 37, 5, dtype=torch.float64)
    out, _ = ema.to("cuda")(x.to("cuda"))
    ema = ema.to("cpu")
    for b in range(2):
        expected = naive_ema(ema, x[b])
        torch.testing.assert_close(out[b].cpu(), expected, rtol=1e-10, atol=1e-10)
    out32, _ = ema.float().to("cuda")(x.float().to("cuda"))  # cuFFT float32
    assert (out32.cpu().double() - out.cpu()).abs().max() < 1e-4 * out.abs().max()


def _lm(act, chunk, dtype, device):
    torch.manual_seed(0)
    config = tiny_config(
        is_decoder=True,
        bidirectional=False,
        attention_activation=act,
        use_chunking=chunk > 0,
        chunk_size=chunk,
        truncation=3,
        relative_positional_bias="simple",
        normalization_type="scalenorm",
        shared_representation_size=16,
        intermediate_size=32,
    )
    return perturb_(TinyLM(config), 0.3, 0).to(device=device, dtype=dtype).eval()


def _decode(model, ids, prompt):
    logits, states = model(ids[:, :prompt], use_cache=True)
    out = [logits]
    for t in range(prompt, ids.size(1)):
        logits, states = model(ids[:, t : t + 1], states=states)
        out.append(logits)
    return torch.cat(out, dim=1)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("act", ["softmax", "laplace"])
@pytest.mark.parametrize("chunk", [-1, 4])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_cuda_decoding_equals_full_forward(act, chunk, dtype, tol):
    """The full forward runs the CUDA backends (auto), decoding the per-step path."""
    model = _lm(act, chunk, dtype, "cuda")
    ids = torch.randint(0, 37, (2, 14), device="cuda")
    with torch.no_grad():
        full, _ = model(ids)
        stepped = _decode(model, ids, 5)
    scale = full.abs().max()
    assert (stepped - full).abs().max() <= tol * scale


def _classifier(act: str) -> MegaConfig:
    fields = dict(
        num_labels=3,
        attention_activation=act,
        use_chunking=True,
        chunk_size=16,
        shared_representation_size=16,
        intermediate_size=32,
        truncation=12,
    )
    if act == "laplace":  # the image / Pathfinder recipe: pre-norm BatchNorm
        fields.update(normalization_type="batchnorm", normalize_before_mega=True)
    else:  # the Text recipe: post-norm ScaleNorm
        fields.update(normalization_type="scalenorm", normalize_before_mega=False)
        fields.update(normalize_before_ffn=False)
    return tiny_config(**fields)


def _loss_curve(config, device, dtype, steps=20):
    torch.manual_seed(0)
    model = MegaForSequenceClassification(config)
    perturb_(model, 0.3, 0)
    model = model.to(device=device, dtype=dtype).train()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, config.vocab_size, (6, 48), generator=gen)
    lengths = torch.tensor([48, 40, 17, 33, 9, 48])
    mask = (torch.arange(48)[None, :] < lengths[:, None]).long()
    labels = torch.randint(0, config.num_labels, (6,), generator=gen)
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98), weight_decay=0.01)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = model(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act", ["softmax", "laplace"])
def test_twenty_step_float32_loss_curve_matches_cpu_float64(device, act):
    """AdamW with clipping, padded batch, 20 steps: the float32 curve (CUDA: the fast
    backends, TF32 off) stays within 1e-3 relative of the CPU float64 curve."""
    config = _classifier(act)
    reference = _loss_curve(config, "cpu", torch.float64)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        curve = _loss_curve(config, device, torch.float32)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert reference[-1] < 0.8 * reference[0], "the model did not learn: the test is void"
    assert ((curve - reference).abs() / reference).max() < 1e-3, (curve, reference)


def test_loss_curve_is_sensitive_to_the_attention():
    """The curve comparison can fail: attending within chunks of 8 instead of 16 (what a wrong
    block mask would do) moves the curve far beyond the 1e-3 tolerance."""
    config = _classifier("softmax")
    reference = _loss_curve(config, "cpu", torch.float64, steps=5)
    chunk8 = MegaConfig.from_dict(config.to_dict(), chunk_size=8)
    other = _loss_curve(chunk8, "cpu", torch.float64, steps=5)
    assert ((other - reference).abs() / reference).max() > 1e-2
