"""Structured state-space (S4 / S4D) convolution kernels, plain PyTorch (S4 paper, Gu et al. ICLR
2022, §3, Algorithm 1; S4D, Gu et al. 2022; the maths as coded: lra_baselines.md §3.6).

Per feature h (H features), the continuous SSM x'(t) = A x(t) + B u(t), y(t) = C x(t) + D u(t)
with state size N is discretised with step Delta and unrolled into a convolution kernel
K[l] = C Abar^l Bbar, l = 0 .. L-1, applied by FFT convolution at length 2L:
y = irfft(rfft(K, 2L) rfft(u, 2L))[:L] + D u. Both kernels keep N/2 complex modes; the other N/2
are their complex conjugates (f(x) = [x, conj x] below).

`DPLRKernel` (S4): A = diag(f(Lambda)) - f(P) f(Q)^T, Q = conj(P) (rank 1), HiPPO-LegS at init
(`nplr_legs`: the LegS matrix A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k),
B_n = sqrt(2n+1), P_n = sqrt(n + 1/2); A + P P^T = -1/2 I + skew is diagonalised by V, keeping the
N/2 eigenvalues with negative imaginary part: Lambda, B~ = V* B, P~ = V* P). Bilinear
discretisation: Abar = (I - Delta/2 A)^-1 (I + Delta/2 A), Bbar = (I - Delta/2 A)^-1 Delta B. The
kernel is never formed from powers: the parameter C holds C~ = f(C) (I - Abar^L')[:N/2] for an
internal length L' (buffer `l_kernel`; 0 = C is still the raw C), so that at the roots of unity
omega_k = exp(-2 pi i k / L') the generating function is
    Khat(omega) = C~ (I - Abar omega)^-1 Bbar = 2/(1+omega) [k_BC - k_BQ k_PC / (1 + k_PQ)]
(Woodbury, rank 1), with Cauchy sums
    k_XY(z) = Delta sum_{m<N} f(X)_m f(Y)_m / (z - Delta f(Lambda)_m)
at z = 2(1-omega)/(1+omega); K = irfft(Khat, L')[:L]. The code here evaluates the same sums
multiplied through by (1+omega), so omega = -1 is no pole. An input longer than L' doubles L' (C~
times (I + Abar^L') per doubling) until it fits. The C~ set-up runs once, in complex128, without
gradient (a change of parameterisation, as the authors' code does it in place); the kernel itself
runs in the parameters' precision (complex64 for float32, complex128 for float64).

`DiagKernel` (S4D): A = diag(Lambda), K[l] = 2 Re sum_n C_n Bbar_n Abar_n^l (a Vandermonde
product). ZOH (default): Abar = exp(Delta Lambda), Bbar = (exp(Delta Lambda) - 1)/Lambda B;
bilinear: Abar = (1 + Delta Lambda/2)/(1 - Delta Lambda/2), Bbar = Delta/(1 - Delta Lambda/2) B.
Inits: `diag-lin` Lambda_n = -1/2 - i pi n; `diag-inv` Lambda_n = -1/2 - i (N/pi)(N/(2n+1) - 1);
`diag-legs` Lambda and B~ of the LegS NPLR above (the S4D paper's S4D-LegS). B = 1 for lin/inv.

Bidirectional (`channels=2`): two C's (k0 forward, k1 backward) over shared Delta, Lambda, P, B;
`fft_conv` convolves with pad(k0, (0, L)) + pad(flip(k1), (L, 0)) at length 2L:
y_t = sum_{s<=t} k0[s] u_{t-s} + sum_{m>=1} k1[m-1] u_{t+m} + D u_t (lag 0 once, k1 shifted by one).

Symbols -> attributes (every kernel parameter lives in a module the layers call `kernel`):
    Delta = exp(log_dt)                               log_dt   (H,)  ~ U[log dt_min, log dt_max]
    Re Lambda = -exp(A_real), Im Lambda = -A_imag     A_real, A_imag (n_A, N/2)
    B (B~)                                            B        (n_B, N/2, 2) complex as (re, im)
    P (P~), and Q when untied (S4-v1)                 P, Q     (1, n_B or H, N/2, 2)
    C (raw C, then C~ for l_kernel)                   C        (channels, H, N/2, 2)
Copies: n_A = n_B = `n_ssm` (H divisible by it; feature h uses copy h mod n_ssm), or S4-v1's
`share_A` (one Lambda for all H, B and P per feature, Q a separate parameter). D is the layer's.
Memory: the Cauchy terms are O(H N L); they are evaluated in chunks of nodes, each
recomputed in the backward (checkpointing), so peak memory stays bounded up to L = 16K. The
Vandermonde sum (S4D) is a batched matmul over blocks of powers and keeps no H N L terms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

DIAG_INITS = ("diag-lin", "diag-inv", "diag-legs")
DISCRETIZATIONS = ("zoh", "bilinear")
# parameter names (inside a `kernel` submodule) that S4's recipes train with their own lr, wd 0
SSM_PARAMETER_NAMES = ("log_dt", "A_real", "A_imag", "B", "P", "Q")
_VANDERMONDE_BLOCK = 64  # powers a^l as a^(kB) a^j (S4D kernel): B = 64
_CHUNK_ELEMENTS = 1 << 23  # complex elements of one chunk of Cauchy / Vandermonde terms


def ssm_parameter_names(module: nn.Module) -> list[str]:
    """Names of `module`'s SSM parameters (`...kernel.<log_dt|A_real|A_imag|B|P|Q>`)."""
    out = []
    for name, _ in module.named_parameters():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-2] == "kernel" and parts[-1] in SSM_PARAMETER_NAMES:
            out.append(name)
    return out


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


# --------------------------------------------------------------------------- HiPPO / inits
def hippo_legs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO-LegS matrix A (n, n) and vector B (n,), float64."""
    q = torch.arange(n, dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    a = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(q + 1)
    return a, r.clone()


def nplr_legs(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """LegS in normal-plus-low-rank form: Lambda, P~, B~ (N/2 complex modes each) and V (N, N/2)
    with A = V diag(Lambda) V* - P~ P~* over the conjugate pairs (complex128)."""
    if n % 2:
        raise ValueError(f"d_state={n}: expected an even number (N/2 complex modes)")
    a, b = hippo_legs(n)
    p = torch.sqrt(torch.arange(n, dtype=torch.float64) + 0.5)
    s = a + p[:, None] * p[None, :]  # -1/2 I + skew-symmetric
    diag = torch.diagonal(s).mean()
    w, v = torch.linalg.eigh((s - diag * torch.eye(n, dtype=torch.float64)) * -1j)
    # eigh sorts ascending: the first N/2 eigenvalues of -i S_skew (= Im Lambda) are negative
    lam = diag + 1j * w[: n // 2]
    v = v[:, : n // 2]
    vh = v.conj().T
    return lam, vh @ p.to(v.dtype), vh @ b.to(v.dtype), v


def diag_init(init: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lambda and B (N/2 complex modes, complex128) of an S4D init."""
    if init not in DIAG_INITS:
        raise ValueError(f"init={init!r}: expected one of {list(DIAG_INITS)}")
    k = torch.arange(n // 2, dtype=torch.float64)
    if init == "diag-lin":
        lam = -0.5 - 1j * math.pi * k
    elif init == "diag-inv":
        lam = -0.5 - 1j * (n / math.pi) * (n / (2 * k + 1) - 1)
    else:
        lam, _, b, _ = nplr_legs(n)
        return lam, b
    return lam.to(torch.complex128), torch.ones(n // 2, dtype=torch.complex128)


def _as_real(z: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(z.to(torch.complex64)).clone()


def _f(x: torch.Tensor) -> torch.Tensor:
    """[x, conj x] along the last axis: the N/2 stored modes and their conjugates."""
    return torch.cat([x, x.conj()], dim=-1)


def _tile(x: torch.Tensor, h: int) -> torch.Tensor:
    """(n, ...) copies -> (h, ...), feature i using copy i mod n."""
    return x.repeat(h // x.size(0), *([1] * (x.dim() - 1)))


def _chunked(fn, length: int, rows: int, *args: torch.Tensor) -> torch.Tensor:
    """fn(start, stop, *args) over [0, length) in chunks of about _CHUNK_ELEMENTS / rows, joined
    on the last axis; chunks are recomputed in the backward when a gradient is needed."""
    step = max(1, _CHUNK_ELEMENTS // max(rows, 1))
    if length <= step:
        return fn(0, length, *args)
    grad = torch.is_grad_enabled() and any(a.requires_grad for a in args)
    outs = []
    for start in range(0, length, step):
        stop = min(start + step, length)
        if grad:
            outs.append(checkpoint(fn, start, stop, *args, use_reentrant=False))
        else:
            outs.append(fn(start, stop, *args))
    return torch.cat(outs, dim=-1)


def _log_dt(h: int, dt_min: float, dt_max: float) -> torch.Tensor:
    return torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def _random_c(channels: int, h: int, modes: int) -> torch.Tensor:
    """C ~ complex normal (real and imaginary parts N(0, 1/2)) as (channels, H, N/2, 2)."""
    return torch.view_as_real(torch.randn(channels, h, modes, dtype=torch.cfloat)).clone()


# --------------------------------------------------------------------------- S4 (DPLR)
class DPLRKernel(nn.Module):
    """The S4 kernel: HiPPO-LegS in DPLR form, bilinear, Cauchy + Woodbury at the roots of unity.

    forward(L) -> K (channels, H, L) in the parameters' dtype. `l_max`: length C~ is set up for
    at construction (None: at the first call). `share_A` (S4-v1): one Lambda for every feature, B
    and P per feature, a separate learned Q (= conj P at init), and C taken as C~ for l_max as
    drawn (v1's `length_correction=False`). `b_clip`: clip Im B~ to [-b_clip, b_clip] (HEAD's 2).
    """

    def __init__(
        self,
        hidden_size: int,
        d_state: int = 64,
        channels: int = 1,
        n_ssm: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        l_max: int | None = None,
        share_A: bool = False,
        b_clip: float | None = None,
    ) -> None:
        super().__init__()
        h, modes = hidden_size, d_state // 2
        n_ssm = h if n_ssm is None else n_ssm
        if n_ssm <= 0 or h % n_ssm:
            raise ValueError(f"n_ssm={n_ssm}: expected a divisor of hidden_size={h}")
        self.hidden_size, self.d_state, self.channels = h, d_state, channels
        self.share_A = share_A
        lam, p, b, _ = nplr_legs(d_state)
        if b_clip is not None:
            b = torch.complex(b.real, b.imag.clamp(-b_clip, b_clip))
        n_a = 1 if share_A else n_ssm
        n_b = h if share_A else n_ssm
        self.log_dt = nn.Parameter(_log_dt(h, dt_min, dt_max))
        self.A_real = nn.Parameter(torch.log(-lam.real).float().repeat(n_a, 1))
        self.A_imag = nn.Parameter((-lam.imag).float().repeat(n_a, 1))
        self.B = nn.Parameter(_as_real(b).repeat(n_b, 1, 1))
        self.P = nn.Parameter(_as_real(p).repeat(1, n_b, 1, 1))
        self.Q = nn.Parameter(_as_real(p.conj()).repeat(1, n_b, 1, 1)) if share_A else None
        self.C = nn.Parameter(_random_c(channels, h, modes))
        self.register_buffer("l_kernel", torch.tensor(0, dtype=torch.long))
        if l_max is not None:
            if share_A:  # v1: the drawn C is C~ for l_max
                self.l_kernel.fill_(l_max)
            else:
                self.setup_C(l_max)

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, d_state={self.d_state}, channels={self.channels}, "
            f"share_A={self.share_A}, l_kernel={int(self.l_kernel)}"
        )

    # ---------------------------------------------------------------- parameters
    def ssm(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """dt (H,), Lambda, B, P, Q (H, N/2) and C (channels, H, N/2), complex of `dtype`."""
        h = self.hidden_size
        cd = _complex_dtype(dtype)
        lam = torch.complex(-torch.exp(self.A_real.to(dtype)), -self.A_imag.to(dtype))
        p = torch.view_as_complex(self.P.to(dtype).contiguous())[0]
        q = p.conj() if self.Q is None else torch.view_as_complex(self.Q.to(dtype).contiguous())[0]
        return {
            "dt": torch.exp(self.log_dt.to(dtype)),
            "lam": _tile(lam, h).to(cd),
            "B": _tile(torch.view_as_complex(self.B.to(dtype).contiguous()), h),
            "P": _tile(p, h),
            "Q": _tile(q, h),
            "C": torch.view_as_complex(self.C.to(dtype).contiguous()),
        }

    def dense(self, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """The discrete system over the full N state: Abar (H, N, N), Bbar (H, N) (bilinear)."""
        s = self.ssm(dtype)
        a = torch.diag_embed(_f(s["lam"])) - _f(s["P"]).unsqueeze(-1) * _f(s["Q"]).unsqueeze(-2)
        eye = torch.eye(a.size(-1), dtype=a.dtype, device=a.device)
        half = (s["dt"] / 2)[:, None, None].to(a.dtype) * a
        back = eye - half
        abar = torch.linalg.solve(back, eye + half)
        bbar = torch.linalg.solve(back, (s["dt"][:, None].to(a.dtype) * _f(s["B"])).unsqueeze(-1))
        return abar, bbar.squeeze(-1)

    def step_matrices(self, dtype: torch.dtype = torch.float64):
        """(Abar (H, N, N), Bbar (H, N), C_eff (channels, H, N)) with K[l] = C_eff Abar^l Bbar:
        the recurrence x_t = Abar x_{t-1} + Bbar u_t, y_t = Re(C_eff x_t) equals the kernel."""
        abar, bbar = self.dense(dtype)
        c = _f(self.ssm(dtype)["C"])
        length = int(self.l_kernel)
        if length > 0:  # C~ = C (I - Abar^L')  ->  C = C~ (I - Abar^L')^-1
            eye = torch.eye(abar.size(-1), dtype=abar.dtype, device=abar.device)
            m = eye - torch.linalg.matrix_power(abar, length)
            c = torch.linalg.solve(m.transpose(-1, -2).unsqueeze(0), c.unsqueeze(-1)).squeeze(-1)
        return abar, bbar, c

    @torch.no_grad()
    def setup_C(self, length: int) -> None:
        """Turn C into C~ for internal length `length` (raw C), or double l_kernel until it
        reaches `length` (C~ <- C~ (I + Abar^L'))."""
        current = int(self.l_kernel)
        if current >= length:
            return
        if current == 0 and self.share_A:  # v1: the drawn C is C~ for the first length
            self.l_kernel.fill_(length)
            return
        abar, _ = self.dense(torch.float64)
        c = _f(self.ssm(torch.float64)["C"])  # (channels, H, N)
        eye = torch.eye(abar.size(-1), dtype=abar.dtype, device=abar.device)
        if current == 0:
            m = eye - torch.linalg.matrix_power(abar, length)
            c = torch.einsum("chm,hmn->chn", c, m)
            current = length
        else:
            while current < length:
                c = torch.einsum("chm,hmn->chn", c, eye + torch.linalg.matrix_power(abar, current))
                current *= 2
        modes = c.size(-1) // 2
        self.C.copy_(torch.view_as_real(c[..., :modes]).to(self.C.dtype))
        self.l_kernel.fill_(current)

    # ------------------------------------------------------------------- kernel
    def forward(self, length: int) -> torch.Tensor:
        if int(self.l_kernel) < length:
            self.setup_C(length)
        big = int(self.l_kernel)
        dtype = torch.promote_types(self.log_dt.dtype, torch.float32)
        s = self.ssm(dtype)
        cd = s["lam"].dtype
        k = torch.arange(big // 2 + 1, dtype=torch.float64, device=self.log_dt.device)
        omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / big).to(cd)  # (K,)
        dt = s["dt"].to(cd)
        # rows Y = [C~_0, ..., C~_{c-1}, Q], columns X = [B, P]: v[y, x] = f(X) f(Y) Delta
        ys = torch.cat([s["C"], s["Q"].unsqueeze(0)], dim=0)  # (c+1, H, N/2)
        xs = torch.stack([s["B"], s["P"]], dim=0)  # (2, H, N/2)
        v = _f(ys.unsqueeze(1) * xs.unsqueeze(0)) * dt[:, None]  # (c+1, 2, H, N)
        lam_dt = _f(s["lam"]) * dt[:, None]  # (H, N)
        kk = _chunked(_cauchy, omega.numel(), lam_dt.numel(), v, lam_dt, omega)  # (c+1, 2, H, K)
        k_bc, k_pc = kk[:-1, 0], kk[:-1, 1]  # (c, H, K)
        k_bq, k_pq = kk[-1, 0], kk[-1, 1]  # (H, K)
        # Khat = 2/(1+w) [r_BC - r_BQ r_PC / (1 + r_PQ)] with r = (1+w) s (s = the chunks' sums)
        one_w = 1 + omega
        khat = 2 * (k_bc - one_w * k_bq * k_pc / (1 + one_w * k_pq))  # (c, H, K)
        kern = torch.fft.irfft(khat, n=big)  # (c, H, L')
        return kern[..., :length].to(dtype)


def _cauchy(
    start: int, stop: int, v: torch.Tensor, lam_dt: torch.Tensor, omega: torch.Tensor
) -> torch.Tensor:
    """sum_m v[..., h, m] / (2(1-w) - Delta Lambda_hm (1+w)) at the nodes w = omega[start:stop]."""
    w = omega[start:stop]
    den = 2 * (1 - w) - lam_dt.unsqueeze(-1) * (1 + w)  # (H, N, k)
    return torch.einsum("...hm,hmk->...hk", v, den.reciprocal())


# --------------------------------------------------------------------------- S4D (diagonal)
class DiagKernel(nn.Module):
    """The S4D kernel: K[c, h, l] = 2 Re sum_n C[c,h,n] Bbar[h,n] Abar[h,n]^l.

    `discretization`: "zoh" (default) or "bilinear"; `init`: diag-lin | diag-inv | diag-legs.
    The kernel has no length state: any length works at any time.
    """

    def __init__(
        self,
        hidden_size: int,
        d_state: int = 64,
        channels: int = 1,
        n_ssm: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        init: str = "diag-lin",
        discretization: str = "zoh",
    ) -> None:
        super().__init__()
        if discretization not in DISCRETIZATIONS:
            raise ValueError(
                f"discretization={discretization!r}: expected one of {list(DISCRETIZATIONS)}"
            )
        if d_state % 2 or d_state <= 0:
            raise ValueError(f"d_state={d_state}: expected a positive even number")
        h = hidden_size
        n_ssm = h if n_ssm is None else n_ssm
        if n_ssm <= 0 or h % n_ssm:
            raise ValueError(f"n_ssm={n_ssm}: expected a divisor of hidden_size={h}")
        self.hidden_size, self.d_state, self.channels = h, d_state, channels
        self.init, self.discretization = init, discretization
        lam, b = diag_init(init, d_state)
        self.log_dt = nn.Parameter(_log_dt(h, dt_min, dt_max))
        self.A_real = nn.Parameter(torch.log(-lam.real).float().repeat(n_ssm, 1))
        self.A_imag = nn.Parameter((-lam.imag).float().repeat(n_ssm, 1))
        self.B = nn.Parameter(_as_real(b).repeat(n_ssm, 1, 1))
        self.C = nn.Parameter(_random_c(channels, h, d_state // 2))

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, d_state={self.d_state}, channels={self.channels}, "
            f"init={self.init!r}, discretization={self.discretization!r}"
        )

    def discrete(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log Abar, Bbar (H, N/2) and C (channels, H, N/2), complex of `dtype`."""
        h = self.hidden_size
        lam = _tile(torch.complex(-torch.exp(self.A_real.to(dtype)), -self.A_imag.to(dtype)), h)
        b = _tile(torch.view_as_complex(self.B.to(dtype).contiguous()), h)
        c = torch.view_as_complex(self.C.to(dtype).contiguous())
        dtl = torch.exp(self.log_dt.to(dtype))[:, None] * lam  # Delta Lambda (H, N/2)
        if self.discretization == "zoh":
            log_a = dtl
            bbar = (torch.exp(dtl) - 1) / lam * b
        else:
            log_a = torch.log((1 + dtl / 2) / (1 - dtl / 2))
            bbar = torch.exp(self.log_dt.to(dtype))[:, None] / (1 - dtl / 2) * b
        return log_a, bbar, c

    def step_matrices(self, dtype: torch.dtype = torch.float64):
        """(Abar (H, N/2), Bbar (H, N/2), 2 C (channels, H, N/2)): x_t = Abar x_{t-1} + Bbar u_t,
        y_t = Re(2 C x_t) equals the kernel."""
        log_a, bbar, c = self.discrete(dtype)
        return torch.exp(log_a), bbar, 2 * c

    def forward(self, length: int) -> torch.Tensor:
        dtype = torch.promote_types(self.log_dt.dtype, torch.float32)
        log_a, bbar, c = self.discrete(dtype)
        cb = c * bbar  # (channels, H, N/2)
        return _vandermonde(cb, log_a, length).to(dtype)


def _vandermonde(cb: torch.Tensor, log_a: torch.Tensor, length: int) -> torch.Tensor:
    """K[c, h, l] = 2 Re sum_n cb[c, h, n] exp(l log_a[h, n]) for l < length: (channels, H, L).

    With l = k B + j (B = `_VANDERMONDE_BLOCK`), exp(l log_a) = exp(k B log_a) exp(j log_a): the
    sum over n becomes one batched matmul per feature, (C L/B, N/2) @ (N/2, B), and only
    H N/2 (L/B + B) exponentials are taken instead of H N/2 L (complex exp dominated the time).
    Nothing of size H N L is kept for the backward."""
    block = min(_VANDERMONDE_BLOCK, length)
    blocks = -(-length // block)
    channels, h, modes = cb.shape
    real = log_a.real.dtype
    j = torch.arange(block, device=log_a.device, dtype=real)
    k = torch.arange(blocks, device=log_a.device, dtype=real) * block
    inner = torch.exp(log_a.unsqueeze(-1) * j)  # (H, N/2, B): a^j
    outer = torch.exp(log_a.unsqueeze(-1) * k)  # (H, N/2, L/B): a^(kB)
    weighted = (cb.unsqueeze(-1) * outer).permute(1, 0, 3, 2)  # (H, C, L/B, N/2)
    out = torch.bmm(weighted.reshape(h, channels * blocks, modes), inner)  # (H, C L/B, B)
    out = out.reshape(h, channels, blocks * block)[..., :length]
    return 2 * out.permute(1, 0, 2).real


# --------------------------------------------------------------------------- convolution
def fft_conv(u: torch.Tensor, kernel: torch.Tensor, bidirectional: bool = False) -> torch.Tensor:
    """u (B, H, L), kernel (channels, H, L) -> (B, H, L), FFT at length 2L (no wrap-around).

    Causal: y_t = sum_{s<=t} k0[s] u_{t-s}. Bidirectional (channels = 2): plus
    sum_{m>=1} k1[m-1] u_{t+m}, through the kernel pad(k0, (0, L)) + pad(flip(k1), (L, 0))."""
    length = u.size(-1)
    if bidirectional:
        k0, k1 = kernel[0], kernel[1]
        k = F.pad(k0, (0, length)) + F.pad(k1.flip(-1), (length, 0))  # (H, 2L)
    else:
        k = kernel[0]
    n = 2 * length
    kf = torch.fft.rfft(k, n=n)  # (H, L+1)
    uf = torch.fft.rfft(u, n=n)  # (B, H, L+1)
    return torch.fft.irfft(uf * kf, n=n)[..., :length]


class SSMConvolution(nn.Module):
    """y = K * u + D u over (B, L, H) sequences: a kernel module (`kernel`) and the skip `D` (H,).

    Padded positions of u are zeroed first, so padding never reaches a real token. `truncation`
    caps the kernel's length (Mega's `truncation`); None: the whole length. The kernel and the
    FFTs run in max(input dtype, float32) with autocast off; the output has the input's dtype.
    """

    def __init__(
        self,
        kernel: nn.Module,
        hidden_size: int,
        bidirectional: bool = False,
        truncation: int | None = None,
    ) -> None:
        super().__init__()
        expected = 2 if bidirectional else 1
        if kernel.channels != expected:
            raise ValueError(f"kernel has {kernel.channels} channels; expected {expected}")
        self.kernel = kernel
        self.D = nn.Parameter(torch.randn(hidden_size))
        self.bidirectional = bidirectional
        self.truncation = truncation

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, H), mask (B, L) with True / 1 = real token -> (B, L, H)."""
        length = x.size(1)
        with torch.autocast(x.device.type, enabled=False):
            cdtype = torch.promote_types(x.dtype, torch.float32)
            u = x.to(cdtype)
            if mask is not None:
                u = u * mask.unsqueeze(-1).to(cdtype)
            u = u.transpose(1, 2)  # (B, L, H) -> (B, H, L)
            taps = length if self.truncation is None else min(self.truncation, length)
            kern = self.kernel(taps).to(cdtype)  # (channels, H, taps)
            if taps < length:
                kern = F.pad(kern, (0, length - taps))
            y = fft_conv(u, kern, self.bidirectional) + self.D.to(cdtype)[:, None] * u
        return y.transpose(1, 2).to(x.dtype)  # (B, H, L) -> (B, L, H)


class S4DGate(SSMConvolution):
    """Mega's EMA sub-layer with an S4D kernel in place of the damped EMA (`ema_kernel: s4d`):
    SiLU(K * x + D x), the form of the S4 repository's Mega-with-S4 block (its S4 layer with no
    activation, D playing the EMA's omega, then the block's SiLU, which the original EMA applies
    itself). S4D-Lin, ZOH, Delta in [1e-3, 1e-1], d_state = Mega's h (`ema_projection_size`,
    h/2 complex modes), bidirectional as S4 (lag 0 once, the backward kernel shifted by one),
    kernel length capped by `truncation`. Same call and return as `MultiDimensionDampedEMA`,
    without decoding state."""

    def __init__(
        self,
        embed_dim: int,
        d_state: int,
        bidirectional: bool = False,
        truncation: int | None = None,
    ) -> None:
        channels = 2 if bidirectional else 1
        super().__init__(
            DiagKernel(embed_dim, d_state, channels=channels), embed_dim, bidirectional, truncation
        )

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state=None,
        return_state: bool = False,
    ) -> tuple[torch.Tensor, None]:
        if state is not None or return_state:
            raise ValueError(
                "incremental decoding needs the damped EMA (ema_kernel='ema'); the S4D gate has "
                "no decoding state"
            )
        return F.silu(super().forward(x, attention_mask)), None
