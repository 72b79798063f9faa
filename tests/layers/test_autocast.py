"""bf16 autocast: the EMA kernel and FFTs stay float32, attention accumulates in float32, and a
whole LRA backbone stays within 2e-2 (relative) of float32 with no NaN, all-padding chunks
included. CPU autocast with bfloat16 runs them here; the CUDA variants carry the `gpu` marker."""

import pytest
import torch

from mega_lra import MegaConfig, MegaModel
from mega_lra.layers import attention_backends as ab
from mega_lra.layers.ema import MultiDimensionDampedEMA
from tests.gpu_helpers import DEVICES, GPU_MARKS, relative_error


def autocast(device):
    return torch.autocast(device, dtype=torch.bfloat16)


@pytest.mark.parametrize("device", DEVICES)
def test_ema_kernel_and_ffts_stay_float32_under_autocast(device):
    torch.manual_seed(0)
    ema = MultiDimensionDampedEMA(16, 4, bidirectional=True, truncation=40).to(device)
    x = torch.randn(2, 300, 16, device=device)
    kernel, (out, _) = ema.kernel(40), ema(x)
    with autocast(device):
        kernel_ac, (out_ac, _) = ema.kernel(40), ema(x)
        out_bf16_in, _ = ema(x.bfloat16())
    assert kernel_ac.dtype == torch.float32 and out_ac.dtype == torch.float32
    torch.testing.assert_close(kernel_ac, kernel, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out_ac, out, rtol=1e-6, atol=1e-6)
    # a bf16 input keeps its dtype, computed in float32 from the bf16 values
    assert out_bf16_in.dtype == torch.bfloat16
    expected, _ = ema(x.bfloat16().float())
    torch.testing.assert_close(out_bf16_in.float(), expected, rtol=1e-2, atol=1e-2)


SOFTMAX_KERNELS = [
    ("cpu", "sdpa"),
    pytest.param("cuda", "sdpa", marks=GPU_MARKS, id="cuda-sdpa"),
    pytest.param("cuda", "flex", marks=GPU_MARKS, id="cuda-flex"),
]


@pytest.mark.parametrize("device,backend", SOFTMAX_KERNELS)
def test_softmax_kernels_accumulate_in_float32_under_autocast(device, backend):
    """4096 keys with weights ~1/4096 each: a bf16 running sum would stall near 0.125; the
    float32 accumulators of the kernels give the float64 result within bf16 rounding."""
    torch.manual_seed(0)
    length = 4096
    q = 0.1 * torch.randn(1, length, 16, device=device)
    k = 0.1 * torch.randn(1, length, 16, device=device)
    v = 1 + 0.01 * torch.randn(1, length, 32, device=device)
    scores = (q.double() @ k.double().transpose(1, 2)) * 0.25
    expected = torch.softmax(scores, -1) @ v.double()
    with autocast(device):
        if backend == "sdpa":
            out = ab.sdpa_attention(q[:, None], k[:, None], v[:, None], None, 0.25)[:, 0]
        else:
            out = ab.flex_chunk_attention(q * 0.25, k, v, length, False, None, None, 0)
    assert out.dtype == torch.bfloat16
    assert relative_error(out, expected) < 1e-2


BACKBONES = [
    ("cpu", "auto", "text"),
    ("cpu", "sdpa", "text"),
    ("cpu", "auto", "image"),
    pytest.param("cuda", "auto", "text", marks=GPU_MARKS, id="cuda-auto-text"),
    pytest.param("cuda", "sdpa", "text", marks=GPU_MARKS, id="cuda-sdpa-text"),
    pytest.param("cuda", "flex", "text", marks=GPU_MARKS, id="cuda-flex-text"),
    pytest.param("cuda", "auto", "image", marks=GPU_MARKS, id="cuda-auto-image"),
]


def backbone_config(recipe: str, length: int, chunked: bool, backend: str) -> MegaConfig:
    """The LRA Text backbone (softmax, post-norm ScaleNorm) or the image one (laplace, pre-norm
    BatchNorm, D = 160, Z = 96, H = 320), dropout off."""
    fields = dict(  # mega_lra_imdb: D 128, H = F 256, Z 64, N 16, 4 layers, post-norm ScaleNorm
        vocab_size=260,
        hidden_size=128,
        num_hidden_layers=4,
        intermediate_size=256,
        ema_projection_size=16,
        shared_representation_size=64,
        nffn_hidden_size=256,
        truncation=1024,
        relative_positional_bias="simple",
        normalization_type="scalenorm",
        normalize_before_mega=False,
        normalize_before_ffn=False,
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
        bidirectional=True,
        attention_activation="softmax",
        use_chunking=chunked,
        chunk_size=128 if chunked else -1,
        max_positions=max(length, 2048),
    )
    if recipe == "image":
        fields.update(
            hidden_size=160,
            intermediate_size=320,
            nffn_hidden_size=320,
            shared_representation_size=96,
            attention_activation="laplace",
            normalization_type="batchnorm",
            normalize_before_mega=True,
            normalize_before_ffn=True,
            final_norm=True,
        )
    return MegaConfig(**fields, attention_backend=backend)


@pytest.mark.parametrize("device,backend,recipe", BACKBONES)
@pytest.mark.parametrize("chunked", [True, False])
def test_lra_backbone_bf16_autocast_stays_close_to_float32(device, backend, recipe, chunked):
    """Whole 4-layer backbone, batch with an all-padding tail (chunks of padding only):
    relative error of bf16 autocast < 2e-2 on real positions, nothing NaN, finite gradients."""
    length = 512 if device == "cpu" else 2048
    torch.manual_seed(0)
    config = backbone_config(recipe, length, chunked, backend)
    model = MegaModel(config, add_pooling_layer=False).to(device).train()
    ids = torch.randint(3, config.vocab_size, (2, length), device=device)
    mask = torch.ones(2, length, dtype=torch.long, device=device)
    mask[1, 100:] = 0  # row 1: 100 real tokens, then whole chunks of padding
    ref = model(ids, attention_mask=mask).last_hidden_state
    with autocast(device):
        out = model(ids, attention_mask=mask).last_hidden_state
    out.float().square().mean().backward()
    assert torch.isfinite(out).all()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    real = mask.bool()
    assert relative_error(out.float()[real], ref[real]) < 2e-2
