"""The S4 / S4D kernels (mega_lra/layers/ssm_kernels.py) against independent float64 references
written from the equations (dense bilinear powers, the diagonal recurrence, an explicit two-sided
sum) and against the golden tensors of the authors' code (tests/layers/golden_s4/, README there).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mega_lra.layers import ssm_kernels
from mega_lra.layers.ssm_kernels import (
    DiagKernel,
    DPLRKernel,
    SSMConvolution,
    fft_conv,
    hippo_legs,
    nplr_legs,
)
from mega_lra.models.s4 import S4Layer

GOLDEN = Path(__file__).resolve().parent / "golden_s4"


# ------------------------------------------------------------------ float64 references
def dense_dplr_kernel(kernel: DPLRKernel, raw_c: torch.Tensor, length: int) -> torch.Tensor:
    """K[c, h, l] = f(C) Abar^l Bbar from the full N x N system: A = diag(f(Lambda)) - f(P) f(Q)^T,
    bilinear with a linear solve, the powers summed one by one (float64)."""
    with torch.no_grad():
        s = kernel.ssm(torch.float64)
        f = lambda x: torch.cat([x, x.conj()], -1)  # noqa: E731
        a = torch.diag_embed(f(s["lam"])) - f(s["P"])[:, :, None] * f(s["Q"])[:, None, :]
        eye = torch.eye(a.size(-1), dtype=a.dtype)
        dt = s["dt"].to(a.dtype)[:, None, None]
        abar = torch.linalg.solve(eye - dt / 2 * a, eye + dt / 2 * a)
        x = torch.linalg.solve(eye - dt / 2 * a, (dt[..., 0] * f(s["B"]))[..., None])[..., 0]
        c = f(torch.view_as_complex(raw_c.double().contiguous()))  # (channels, H, N)
        out = []
        for _ in range(length):
            out.append(torch.einsum("chn,hn->ch", c, x))
            x = torch.einsum("hmn,hn->hm", abar, x)
        return torch.stack(out, -1).real


def diag_recurrence(kernel: DiagKernel, length: int) -> torch.Tensor:
    """Impulse response of x_t = Abar x_{t-1} + Bbar u_t, y_t = 2 Re C x_t, run step by step."""
    with torch.no_grad():
        abar, bbar, c2 = kernel.step_matrices(torch.float64)
        x = bbar.clone()  # the state after the impulse u_0 = 1
        out = []
        for _ in range(length):
            out.append(torch.einsum("chn,hn->ch", c2, x).real)
            x = abar * x
        return torch.stack(out, -1)


def two_sided_sum(u: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{s<=t} k0[s] u_{t-s} + sum_{m=1}^{L-1-t} k1[m-1] u_{t+m}, explicitly."""
    _, _, length = u.shape
    y = torch.zeros_like(u)
    for t in range(length):
        for s in range(t + 1):
            y[..., t] += k0[:, s] * u[..., t - s]
        for m in range(1, length - t):
            y[..., t] += k1[:, m - 1] * u[..., t + m]
    return y


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------------ HiPPO / inits
def test_legs_nplr_form_reconstructs_the_hippo_matrix():
    n = 16
    a, b = hippo_legs(n)
    lam, p, bt, v = nplr_legs(n)
    vf = torch.cat([v, v.conj()], -1)  # (N, N), unitary
    fp = torch.cat([p, p.conj()])
    a_rec = (
        vf
        @ (torch.diag(torch.cat([lam, lam.conj()])) - fp[:, None] * fp.conj()[None])
        @ vf.T.conj()
    )
    assert (a_rec.real - a).abs().max() < 1e-10 and a_rec.imag.abs().max() < 1e-10
    assert (vf @ torch.cat([bt, bt.conj()]) - b).abs().max() < 1e-10
    assert torch.allclose(lam.real, torch.full((n // 2,), -0.5, dtype=torch.float64))
    assert (lam.imag < 0).all()


# ------------------------------------------------------------------------ DPLR (S4)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 2e-5)])
@pytest.mark.parametrize("channels", [1, 2])
def test_dplr_kernel_matches_the_dense_float64_reference(dtype, tol, channels):
    torch.manual_seed(0)
    kernel = DPLRKernel(3, d_state=8, channels=channels, dt_min=0.01, dt_max=0.2).to(dtype)
    raw_c = kernel.C.detach().clone()
    k = kernel(100)  # C -> C~ for 100 (not a power of two)
    assert k.dtype == dtype and k.shape == (channels, 3, 100) and int(kernel.l_kernel) == 100
    assert rel_err(k, dense_dplr_kernel(kernel, raw_c, 100)) < tol


def test_dplr_kernel_doubles_its_length_for_longer_inputs():
    torch.manual_seed(1)
    kernel = DPLRKernel(2, d_state=8, dt_min=0.01, dt_max=0.1).double()
    raw_c = kernel.C.detach().clone()
    short = kernel(48)
    long = kernel(150)  # 48 -> 96 -> 192
    assert int(kernel.l_kernel) == 192
    ref = dense_dplr_kernel(kernel, raw_c, 150)
    assert rel_err(long, ref) < 1e-11 and rel_err(short, ref[..., :48]) < 1e-11
    assert rel_err(kernel(30), ref[..., :30]) < 1e-11  # shorter: truncated, no set-up


def test_a_kernel_built_for_1k_works_at_16k():
    torch.manual_seed(2)
    raw = DPLRKernel(2, d_state=4, dt_min=1e-3, dt_max=1e-2)  # C still raw
    raw_c = raw.C.detach().clone()
    built = DPLRKernel(2, d_state=4, l_max=1024)  # as a model built for a 1K task
    assert int(built.l_kernel) == 1024
    built.load_state_dict(raw.state_dict())
    built.setup_C(1024)
    k = built(16384)  # doubles 1024 -> 16384
    assert int(built.l_kernel) == 16384 and torch.isfinite(k).all()
    assert rel_err(k, raw(16384)) < 1e-5  # the same kernel as one set up for 16K at once
    assert rel_err(k[..., :3000], dense_dplr_kernel(raw, raw_c, 3000)) < 1e-5


def test_v1_layout_takes_the_drawn_C_as_C_tilde_and_shares_lambda():
    torch.manual_seed(3)
    kernel = DPLRKernel(4, d_state=8, share_A=True, l_max=64).double()
    assert int(kernel.l_kernel) == 64 and kernel.A_real.shape == (1, 4)
    assert kernel.B.shape == (4, 4, 2) and kernel.Q is not None
    abar, bbar, c_eff = kernel.step_matrices()
    x, ref = bbar.clone(), []
    for _ in range(64):
        ref.append(torch.einsum("chn,hn->ch", c_eff, x).real)
        x = torch.einsum("hmn,hn->hm", abar, x)
    assert rel_err(kernel(64), torch.stack(ref, -1)) < 1e-10


# ------------------------------------------------------------------------ S4D
@pytest.mark.parametrize("init", ["diag-lin", "diag-inv", "diag-legs"])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_diag_kernel_matches_its_recurrence(init, disc):
    torch.manual_seed(4)
    kernel = DiagKernel(3, d_state=8, channels=2, n_ssm=1, init=init, discretization=disc)
    k = kernel(300)
    assert k.dtype == torch.float32 and k.shape == (2, 3, 300)
    assert rel_err(k, diag_recurrence(kernel, 300)) < 2e-5
    assert rel_err(kernel.double()(300), diag_recurrence(kernel, 300)) < 1e-12


def test_diag_inits_follow_their_formulas():
    n = 16
    lin = DiagKernel(1, n, init="diag-lin")
    inv = DiagKernel(1, n, init="diag-inv")
    k = torch.arange(n // 2, dtype=torch.float64)
    assert torch.allclose(lin.A_imag.double(), math.pi * k[None], atol=1e-5)
    assert torch.allclose(inv.A_imag.double(), (n / math.pi) * (n / (2 * k + 1) - 1), atol=1e-4)
    assert torch.allclose(
        torch.exp(lin.A_real.double()), torch.full((1, 8), 0.5, dtype=torch.float64)
    )
    assert torch.all(lin.B[..., 0] == 1) and torch.all(lin.B[..., 1] == 0)


def test_chunked_kernels_equal_unchunked_values_and_gradients(monkeypatch):
    torch.manual_seed(5)
    for kernel in (DPLRKernel(3, 8, channels=2), DiagKernel(3, 8, channels=2)):
        kernel = kernel.double()
        kernel(64)  # set up C~ first
        whole = kernel(64)
        (g_whole,) = torch.autograd.grad(whole.square().sum(), kernel.log_dt)
        monkeypatch.setattr(ssm_kernels, "_CHUNK_ELEMENTS", 40)  # chunks of a few nodes
        parts = kernel(64)
        (g_parts,) = torch.autograd.grad(parts.square().sum(), kernel.log_dt)
        monkeypatch.undo()
        assert torch.allclose(parts, whole, atol=1e-13) and torch.allclose(g_parts, g_whole)


@pytest.mark.parametrize("which", ["dplr", "diag"])
def test_gradcheck_through_the_kernel_and_the_convolution(which):
    torch.manual_seed(6)
    if which == "dplr":
        kernel = DPLRKernel(2, 4, channels=2, l_max=12, dt_min=0.05, dt_max=0.2).double()
    else:
        kernel = DiagKernel(2, 4, channels=2, dt_min=0.05, dt_max=0.2).double()
    conv = SSMConvolution(kernel, 2, bidirectional=True).double()
    names = [n for n, _ in conv.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in conv.parameters())
    x = torch.randn(1, 12, 2, dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        return torch.func.functional_call(conv, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), atol=1e-7)


# ------------------------------------------------------------------------ convolution
def test_bidirectional_convolution_is_the_two_sided_sum_with_the_shift_by_one():
    torch.manual_seed(7)
    u = torch.randn(2, 3, 37, dtype=torch.float64)
    kern = torch.randn(2, 3, 37, dtype=torch.float64)
    y = fft_conv(u, kern, bidirectional=True)
    assert torch.allclose(y, two_sided_sum(u, kern[0], kern[1]), atol=1e-12)
    causal = fft_conv(u, kern[:1])
    assert torch.allclose(causal, two_sided_sum(u, kern[0], torch.zeros_like(kern[1])), atol=1e-12)


def test_ssm_convolution_zeroes_padding_before_convolving():
    torch.manual_seed(8)
    conv = SSMConvolution(DiagKernel(4, 8, channels=2), 4, bidirectional=True).eval()
    x = torch.randn(2, 30, 4)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, 20:] = False
    noisy = x.clone()
    noisy[1, 20:] = 1e3
    y = conv(noisy, mask)
    assert torch.allclose(y[1, :20], conv(x[1:, :20])[0], atol=1e-5)


# ------------------------------------------------------------------------ golden tensors
def golden(name: str) -> dict[str, np.ndarray]:
    path = GOLDEN / f"{name}.npz"
    assert path.is_file(), f"{path}: golden S4 tensors missing (copy of ../shared/golden/s4/)"
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def cx(d: dict, key: str) -> np.ndarray:
    return d[key + "_re"] + 1j * d[key + "_im"]


def t(a) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)


def c_as_real(z: np.ndarray) -> torch.Tensor:
    return torch.view_as_real(torch.as_tensor(np.ascontiguousarray(z), dtype=torch.complex128))


def layer_from_golden(name: str, dtype: torch.dtype) -> tuple[S4Layer, dict]:
    """Our S4 layer (kernel + D -> GELU -> Linear [-> GLU]) holding the file's parameters."""
    d = golden(name)
    h, n = int(d["meta.H"]), int(d["meta.N"])
    c = cx(d, "C")
    channels = c.shape[0] if c.ndim == 3 else 1  # (channels, H, N/2), or (H, N/2)
    bidir = channels == 2
    if name.startswith("s4d"):
        kernel = DiagKernel(h, n, channels=channels)
    else:
        kernel = DPLRKernel(h, n, channels=channels, share_A=name == "s4v1_nplr_legs")
    layer = S4Layer(
        h, kernel, bidir, glu=name != "s4v1_nplr_legs", dropout_prob=0.0, tie_dropout=False
    )
    layer = layer.double()
    lam = cx(d, "A").reshape(-1, n // 2)
    w = None
    with torch.no_grad():
        kernel.log_dt.copy_(t(d["dt"]).reshape(-1).log())
        kernel.A_real.copy_(t(np.log(-lam.real)))
        kernel.A_imag.copy_(t(-lam.imag))
        if name == "s4d_minimal":  # no B (B = 1)
            kernel.B.copy_(c_as_real(np.ones((h, n // 2))))
        else:
            kernel.B.copy_(c_as_real(cx(d, "B").reshape(h, n // 2)))
        if name == "s4v1_nplr_legs":  # v1: A = diag f(w) - f(p) f(q)^H, K = C_eff^H ...
            kernel.P.copy_(c_as_real(cx(d, "P"))[None])
            kernel.Q.copy_(c_as_real(cx(d, "Q").conj())[None])
            kernel.C.copy_(c_as_real(cx(d, "C").conj())[None])
            kernel.l_kernel.fill_(int(d["meta.L"]))  # the drawn C is C~ for l_max
        else:
            if isinstance(kernel, DPLRKernel):
                kernel.P.copy_(c_as_real(cx(d, "P")))
            kernel.C.copy_(c_as_real(cx(d, "C").reshape(channels, h, n // 2)))
        d_key = next(k for k in d if k.startswith("param.") and k.endswith(".D"))
        layer.conv.D.copy_(t(d[d_key]).reshape(-1))
        w_key = next(
            k
            for k in d
            if k.endswith("output_linear.0.weight") or k == "param.output_linear.weight"
        )
        b_key = w_key.replace("weight", "bias")
        w = t(d[w_key]).reshape(layer.output_linear.weight.shape)
        layer.output_linear.weight.copy_(w)
        layer.output_linear.bias.copy_(t(d[b_key]).reshape(-1))
    return layer.to(dtype), d


GOLDEN_FILES = [
    "s4d_lin_zoh",
    "s4d_inv_zoh",
    "s4_nplr_legs",
    "s4_nplr_legs_bidir",
    "s4v1_nplr_legs",
    "s4v2_nplr_legs_bidir",
    "s4d_minimal",
]


@pytest.mark.parametrize("name", GOLDEN_FILES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernels_and_layer_outputs_match_the_golden_tensors(name, dtype):
    layer, d = layer_from_golden(name, dtype)
    v1 = name == "s4v1_nplr_legs"
    kernel = layer.conv.kernel
    lengths = [64, 256] if "K_L64" in d else [256]
    # float64: the authors' tolerances (README §5): 1e-12 absolute, v1 1e-6 relative (its kernel
    # was cast to float32 by its code); float32: relative to the largest value
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for length in lengths:
        k = kernel(length).detach()
        ref = t(d["K_L256_f64"] if v1 else d[f"K_L{length}"]).reshape(k.shape)
        err = float((k.double() - ref).abs().max())
        assert err < (tol if dtype == torch.float64 else tol * float(ref.abs().max())), err
        if f"Ctilde_L{length}_re" in d:
            got = torch.view_as_complex(kernel.C.detach().double().contiguous())
            want = torch.as_tensor(cx(d, f"Ctilde_L{length}"))
            assert float((got - want).abs().max()) < (1e-12 if dtype == torch.float64 else 1e-5)
    u = t(d["u"]).to(dtype).transpose(1, 2)  # (B, H, L) -> (B, L, H)
    with torch.no_grad():
        y_conv = layer.conv(u)
        y_act = F.gelu(y_conv)
        y_lin = layer.output_linear(y_act)
        y = layer(u)
    outs = {"y_conv": y_conv, "y_act": y_act, "y": y}
    if "y_prelinear_out" in d:
        outs["y_prelinear_out"] = y_lin
    for key, got in outs.items():
        want = t(d[key]).transpose(1, 2)
        err = float((got.double() - want).abs().max())
        if v1 and dtype == torch.float64:  # the v1 outputs carry its float32 kernel's rounding
            assert err < 1e-6 * float(want.abs().max()), (key, err)
        elif dtype == torch.float64:
            assert err < 1e-12, (key, err)
        else:
            assert err < 1e-5 * float(want.abs().max()), (key, err)


def test_vandermonde_blocks_equal_the_direct_power_sum():
    """a^(kB + j) = a^(kB) a^j: the blocked matmul equals 2 Re sum_n cb_n exp(l log a_n) taken
    term by term, at a length that is not a multiple of the block, in float64."""
    from mega_lra.layers.ssm_kernels import _vandermonde

    gen = torch.Generator().manual_seed(0)
    h, modes, length = 3, 5, 1000
    log_a = torch.complex(
        -torch.rand(h, modes, generator=gen, dtype=torch.float64) * 0.01,
        torch.randn(h, modes, generator=gen, dtype=torch.float64),
    )
    cb = torch.randn(2, h, modes, 2, generator=gen, dtype=torch.float64)
    cb = torch.view_as_complex(cb)
    ell = torch.arange(length, dtype=torch.float64)
    direct = 2 * (cb.unsqueeze(-1) * torch.exp(log_a.unsqueeze(-1) * ell)).sum(-2).real
    torch.testing.assert_close(_vandermonde(cb, log_a, length), direct, rtol=1e-12, atol=1e-12)
