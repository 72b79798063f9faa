"""The S4 backbones (mega_lra/models/s4.py) and Mega with an S4D kernel (`ema_kernel: s4d`):
recurrence = convolution for the causal model, padding invariance, 16K inputs, the SSM parameter
names the recipes' optimiser groups use, field errors, and the HF round trip of `ema_kernel`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mega_lra import MegaConfig, MegaModel
from mega_lra.hf.configuration import ConfigError
from mega_lra.layers.ssm_kernels import S4DGate, SSMConvolution, ssm_parameter_names
from mega_lra.models.mega import MegaBackbone
from mega_lra.models.s4 import S4DBackbone, S4V1Backbone, S4V2Backbone

BACKBONES = [S4V1Backbone, S4V2Backbone, S4DBackbone]


def small(cls, **fields):
    torch.manual_seed(0)
    return cls(8, **{"num_hidden_layers": 2, "d_state": 4, **fields})


def recurrent_conv(conv: SSMConvolution, x: torch.Tensor) -> torch.Tensor:
    """The causal convolution run as a state-space recurrence, one step at a time (float64):
    s_t = Abar s_{t-1} + Bbar u_t, y_t = Re(C s_t) + D u_t."""
    abar, bbar, c = conv.kernel.step_matrices(torch.float64)
    u = x.double()  # (B, L, H)
    state = torch.zeros(u.size(0), *bbar.shape, dtype=abar.dtype)  # (B, H, N)
    out = []
    for t in range(u.size(1)):
        # DPLR: a dense (H, N, N) Abar; S4D: a diagonal (H, N/2) one
        dense = abar.dim() == 3
        state = torch.einsum("hmn,bhn->bhm", abar, state) if dense else abar * state
        state = state + bbar * u[:, t, :, None]
        out.append(torch.einsum("hn,bhn->bh", c[0], state).real + conv.D.double() * u[:, t])
    return torch.stack(out, 1)


@pytest.mark.parametrize("cls", [S4V1Backbone, S4DBackbone])
def test_step_by_step_recurrence_equals_the_convolution_of_the_causal_model(cls):
    fields = {} if cls is S4V1Backbone else {"bidirectional": False}
    model = small(cls, max_length=64, **fields).eval()
    conv = model.layers[0].mixer.conv
    x = torch.randn(2, 50, 8)
    with torch.no_grad():
        y = conv(x)
        ref = recurrent_conv(conv, x)
    assert float((y.double() - ref).abs().max() / ref.abs().max()) < 1e-5


def test_s4_v1_is_causal():
    model = small(S4V1Backbone, max_length=40).eval()
    x = torch.randn(1, 40, 8)
    mask = torch.ones(1, 40, dtype=torch.bool)
    changed = x.clone()
    changed[:, 25:] += 5.0
    with torch.no_grad():
        y, y2 = model(x, mask), model(changed, mask)
    assert torch.allclose(y[:, :25], y2[:, :25], atol=1e-5)
    assert not torch.allclose(y[:, 25:], y2[:, 25:], atol=1e-3)


@pytest.mark.parametrize("cls", BACKBONES)
@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_padding_does_not_change_real_tokens(cls, norm):
    model = small(cls, normalization_type=norm, max_length=48, prenorm=norm == "batchnorm")
    model.eval()
    x = torch.randn(3, 48, 8)
    mask = torch.ones(3, 48, dtype=torch.bool)
    mask[1, 30:] = False
    mask[2, 10:] = False
    noisy = x.masked_fill(~mask.unsqueeze(-1), 100.0)
    with torch.no_grad():
        y = model(noisy, mask)
        for row, n in ((1, 30), (2, 10)):
            alone = model(x[row : row + 1, :n], mask[row : row + 1, :n])
            assert torch.allclose(y[row, :n], alone[0], atol=1e-5)
        assert (y[~mask] == 0).all()


def test_padding_invariance_in_training_with_batchnorm_excluding_padding():
    model = small(S4V2Backbone, norm_exclude_padding=True, max_length=32).train()
    x = torch.randn(2, 32, 8)
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[1, 20:] = False
    a = model(x, mask)
    b = model(x.masked_fill(~mask.unsqueeze(-1), -7.0), mask)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("cls", BACKBONES)
def test_a_16k_input_runs_forward_and_backward(cls):
    model = cls(4, num_hidden_layers=1, d_state=4, max_length=1024)  # built for 1K
    x = torch.randn(1, 16384, 4, requires_grad=True)
    mask = torch.ones(1, 16384, dtype=torch.bool)
    mask[0, 16000:] = False
    y = model(x, mask)
    y.square().mean().backward()
    assert y.shape == (1, 16384, 4) and torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    kernel = model.layers[0].mixer.conv.kernel
    if hasattr(kernel, "l_kernel"):
        assert int(kernel.l_kernel) == 16384  # doubled from 1024


def test_ssm_parameters_are_named_for_their_optimiser_group():
    v1, v2, s4d = (small(cls) for cls in BACKBONES)
    assert ssm_parameter_names(v1)[:6] == [
        f"layers.0.mixer.conv.kernel.{n}" for n in ("log_dt", "A_real", "A_imag", "B", "P", "Q")
    ]
    assert ssm_parameter_names(v2)[:5] == [
        f"layers.0.mixer.conv.kernel.{n}" for n in ("log_dt", "A_real", "A_imag", "B", "P")
    ]
    assert ssm_parameter_names(s4d)[:4] == [
        f"layers.0.mixer.conv.kernel.{n}" for n in ("log_dt", "A_real", "A_imag", "B")
    ]
    for model in (v1, v2, s4d):
        names = set(ssm_parameter_names(model))
        assert "layers.0.mixer.conv.kernel.C" not in names  # C and D: the ordinary group
        assert "layers.0.mixer.conv.D" not in names
    assert v1.layers[0].mixer.conv.kernel.A_real.shape == (1, 2)  # one Lambda shared over H
    assert v2.layers[0].mixer.conv.kernel.A_real.shape == (8, 2)  # n_ssm = H
    assert small(S4V2Backbone, n_ssm=2).layers[0].mixer.conv.kernel.A_real.shape == (2, 2)


def test_the_layers_are_the_versions_of_section_3_6():
    v1, v2, s4d = (small(cls) for cls in BACKBONES)
    assert v1.layers[0].mixer.output_linear.out_features == 8 and not v1.layers[0].mixer.glu
    assert v2.layers[0].mixer.output_linear.out_features == 16 and v2.layers[0].mixer.glu
    assert v1.layers[0].mixer.conv.kernel.channels == 1 and not v1.bidirectional
    assert v2.layers[0].mixer.conv.kernel.channels == 2 and s4d.bidirectional
    assert v1.describe() == {
        "mixer": "s4", "version": "v1", "kernel": "dplr", "d_state": 4, "n_ssm": None,
        "bidirectional": False, "normalization_type": "batchnorm", "prenorm": True,
        "num_hidden_layers": 2,
    }  # fmt: skip
    assert s4d.describe()["kernel"] == "diag" and s4d.describe()["init"] == "diag-lin"


@pytest.mark.parametrize(
    "cls,field,value",
    [
        (S4V2Backbone, "n_ssm", 3),
        (S4V2Backbone, "d_state", 5),
        (S4V2Backbone, "normalization_type", "scalenorm"),
        (S4DBackbone, "init", "legs"),
        (S4DBackbone, "discretization", "euler"),
        (S4V1Backbone, "dt_min", 0.0),
    ],
)
def test_a_bad_field_is_one_error_naming_it(cls, field, value):
    with pytest.raises(ValueError, match=f"model.{field}"):
        cls(8, **{field: value})


# ---------------------------------------------------------------- Mega with an S4D kernel
def test_ema_kernel_is_a_validated_mega_field():
    assert MegaConfig().ema_kernel == "ema"
    with pytest.raises(ConfigError, match="ema_kernel"):
        MegaConfig(ema_kernel="s4")
    with pytest.raises(ConfigError, match="even"):
        MegaConfig(ema_kernel="s4d", ema_projection_size=3)


def test_the_s4d_gate_is_silu_of_the_two_sided_convolution_plus_d():
    torch.manual_seed(1)
    gate = S4DGate(4, 8, bidirectional=True).double()
    x = torch.randn(2, 20, 4, dtype=torch.float64)
    k = gate.kernel(20)  # (2, H, L)
    u = x.transpose(1, 2)
    ref = torch.zeros_like(u)
    for t in range(20):
        for s in range(t + 1):
            ref[..., t] += k[0, :, s] * u[..., t - s]
        for m in range(1, 20 - t):
            ref[..., t] += k[1, :, m - 1] * u[..., t + m]
    ref = F.silu(ref + gate.D[:, None] * u).transpose(1, 2)
    out, state = gate(x)
    assert state is None and torch.allclose(out, ref, atol=1e-12)
    with pytest.raises(ValueError, match="decoding"):
        gate(x, return_state=True)


def test_mega_s4d_replaces_only_the_ema_and_keeps_padding_out():
    fields = dict(
        num_hidden_layers=1, intermediate_size=16, shared_representation_size=8,
        ema_projection_size=4, max_length=40,
    )  # fmt: skip
    torch.manual_seed(2)
    mega = MegaBackbone(16, **fields)
    torch.manual_seed(2)
    s4d = MegaBackbone(16, ema_kernel="s4d", **fields).eval()
    gate = s4d.layers[0].mega_layer.ema_gate
    assert isinstance(gate, S4DGate) and gate.kernel.d_state == 4
    other = {n for n, _ in mega.named_parameters() if ".ema_gate." not in n}
    assert other == {n for n, _ in s4d.named_parameters() if ".ema_gate." not in n}
    assert s4d.describe()["ema_kernel"] == "s4d" and mega.describe()["ema_kernel"] == "ema"
    assert ssm_parameter_names(s4d) == [
        f"layers.0.mega_layer.ema_gate.kernel.{n}" for n in ("log_dt", "A_real", "A_imag", "B")
    ]
    x = torch.randn(2, 40, 16)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False
    with torch.no_grad():
        y = s4d(x.masked_fill(~mask.unsqueeze(-1), 50.0), mask)
        alone = s4d(x[1:, :25], mask[1:, :25])
    assert torch.allclose(y[1, :25], alone[0], atol=1e-5)


def test_mega_s4d_saves_and_loads_through_the_hf_family(tmp_path):
    config = MegaConfig(
        vocab_size=20, hidden_size=16, num_hidden_layers=1, intermediate_size=16,
        shared_representation_size=8, ema_projection_size=4, nffn_hidden_size=16,
        ema_kernel="s4d", truncation=16,
    )  # fmt: skip
    torch.manual_seed(3)
    model = MegaModel(config).eval()
    model.save_pretrained(tmp_path)
    loaded = MegaModel.from_pretrained(tmp_path).eval()
    assert loaded.config.ema_kernel == "s4d"
    ids = torch.randint(3, 20, (2, 30))
    with torch.no_grad():
        a = model(input_ids=ids).last_hidden_state
        b = loaded(input_ids=ids).last_hidden_state
    assert torch.equal(a, b)


def peak_cpu_memory(model: torch.nn.Module, length: int) -> int:
    """Peak bytes held by torch's CPU allocator over one forward + backward (profiler events)."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(2, length, model.hidden_size, requires_grad=True)
    mask = torch.ones(2, length, dtype=torch.bool)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(x, mask).square().mean().backward()
    events = sorted(
        (e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start
    )
    held = peak = 0
    for event in events:
        held += event.cpu_memory_usage
        peak = max(peak, held)
    return peak


@pytest.mark.parametrize("cls", BACKBONES)
def test_memory_grows_about_linearly_in_length(cls):
    peaks = []
    for length in (1024, 8192):
        torch.manual_seed(0)
        peaks.append(
            peak_cpu_memory(cls(8, num_hidden_layers=1, d_state=8, max_length=length), length)
        )
    assert 6.0 < peaks[1] / peaks[0] < 10.0, peaks  # 8x the length: about 8x the memory
