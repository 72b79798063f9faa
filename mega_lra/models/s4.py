"""S4-v1, S4-v2 and S4D as backbones of the LRA classifier (lra_baselines.md §3.6; kernels in
`mega_lra.layers.ssm_kernels`, whose docstring maps the paper's symbols to attribute names).

One block, every version (the S4 code's residual block around its S4 layer):

    z = norm(x) if prenorm else x
    z = conv(z)                  K * z + D z, padded positions zeroed first (`mixer.conv`)
    z = dropout(GELU(z))         tied over time (Dropout2d) when `tie_dropout`
    z = Linear(z)                H -> H (v1), or H -> 2H then GLU (v2, S4D)
    x = x + dropout(z);  x = norm(x) if not prenorm
and after the last block a final norm when prenorm. The norm is BatchNorm over (batch, time)
(`batchnorm`, statistics including padding as the original unless `norm_exclude_padding`) or
LayerNorm (`layernorm`).

- `S4V1Backbone` (S4-v1, the S4 repository's `v1` tag): DPLR LegS kernel, bilinear, causal, one
  Lambda shared by all features (B, P, Q per feature), C drawn as C~ for the task's length,
  no GLU. Two bookkeeping differences from v1, neither changing a value at init: Lambda is
  parameterised as everywhere here (Re Lambda = -exp(A_real)) where v1 stores it raw, and Q is
  this code's conj(v1's q) (v1 writes A = diag(w) - p q^H and K = C^H ...; the golden test maps
  them). v1 trained its q with C's settings (global lr and weight decay), not with A and B.
- `S4V2Backbone` (S4-v2, tag `v3.0.0`): DPLR LegS, bilinear, bidirectional by default (two C's;
  the backward kernel shifted by one), `n_ssm` copies of (Lambda, P, B), GLU.
- `S4DBackbone`: the S4-v2 layer with the diagonal kernel (ZOH by default; `init` diag-lin |
  diag-inv | diag-legs).

The SSM parameters are `layers.<i>.mixer.conv.kernel.<log_dt|A_real|A_imag|B|P|Q>`
(`ssm_kernels.ssm_parameter_names`): the recipes' own lr and zero weight decay group.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.layers.dropout import SequenceDropout
from mega_lra.layers.norms import SequenceNorm
from mega_lra.layers.ssm_kernels import (
    DIAG_INITS,
    DISCRETIZATIONS,
    DiagKernel,
    DPLRKernel,
    SSMConvolution,
)

NORMS = ("batchnorm", "layernorm")


class S4Layer(nn.Module):
    """conv (K * u + D u) -> GELU -> dropout -> Linear (-> GLU), over (B, L, H)."""

    def __init__(
        self,
        hidden_size: int,
        kernel: nn.Module,
        bidirectional: bool,
        glu: bool,
        dropout_prob: float,
        tie_dropout: bool,
    ) -> None:
        super().__init__()
        self.conv = SSMConvolution(kernel, hidden_size, bidirectional)
        self.dropout = SequenceDropout(dropout_prob, feature=tie_dropout)
        self.glu = glu
        self.output_linear = nn.Linear(hidden_size, 2 * hidden_size if glu else hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.dropout(F.gelu(self.conv(x, mask)))  # (B, L, H)
        y = self.output_linear(y)  # (B, L, H) or (B, L, 2H)
        return F.glu(y, dim=-1) if self.glu else y


class S4Block(nn.Module):
    """Residual block: [norm ->] S4 layer -> dropout -> + x [-> norm]."""

    def __init__(
        self,
        hidden_size: int,
        layer: S4Layer,
        normalization_type: str,
        prenorm: bool,
        dropout_prob: float,
        tie_dropout: bool,
        norm_exclude_padding: bool,
    ) -> None:
        super().__init__()
        self.prenorm = prenorm
        self.norm = SequenceNorm(
            normalization_type, hidden_size, exclude_padding=norm_exclude_padding
        )
        self.mixer = layer
        self.dropout = SequenceDropout(dropout_prob, feature=tie_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        z = self.norm(x, mask) if self.prenorm else x
        x = x + self.dropout(self.mixer(z, mask))
        return x if self.prenorm else self.norm(x, mask)


class _S4Backbone(nn.Module):
    """Shared body of the three backbones; subclasses choose the kernel and the layer."""

    version = ""
    kernel_kind = ""
    glu = True

    def __init__(
        self,
        hidden_size: int,
        num_hidden_layers: int,
        d_state: int,
        n_ssm: int | None,
        dt_min: float,
        dt_max: float,
        bidirectional: bool,
        dropout_prob: float,
        tie_dropout: bool,
        normalization_type: str,
        prenorm: bool,
        norm_exclude_padding: bool,
        max_length: int | None,
    ) -> None:
        super().__init__()
        if normalization_type not in NORMS:
            raise ValueError(
                f"model.normalization_type={normalization_type!r}: expected one of {list(NORMS)}"
            )
        if not isinstance(d_state, int) or d_state <= 0 or d_state % 2:
            raise ValueError(f"model.d_state={d_state!r}: expected a positive even integer")
        if n_ssm is not None and (n_ssm <= 0 or hidden_size % n_ssm):
            raise ValueError(
                f"model.n_ssm={n_ssm!r}: expected null or a divisor of hidden_size={hidden_size}"
            )
        if not 0.0 < dt_min <= dt_max:
            raise ValueError(f"model.dt_min={dt_min}, dt_max={dt_max}: expected 0 < min <= max")
        self.hidden_size = hidden_size
        self.d_state, self.n_ssm = d_state, n_ssm
        self.dt_min, self.dt_max = dt_min, dt_max  # read by make_kernel()
        self.bidirectional = bidirectional
        self.dropout_prob = dropout_prob
        self.normalization_type = normalization_type
        self.prenorm = prenorm
        self.max_length = max_length
        self.layers = nn.ModuleList(
            S4Block(
                hidden_size,
                S4Layer(
                    hidden_size,
                    self.make_kernel(),
                    bidirectional,
                    self.glu,
                    dropout_prob,
                    tie_dropout,
                ),
                normalization_type,
                prenorm,
                dropout_prob,
                tie_dropout,
                norm_exclude_padding,
            )
            for _ in range(num_hidden_layers)
        )
        self.final_norm = (
            SequenceNorm(normalization_type, hidden_size, exclude_padding=norm_exclude_padding)
            if prenorm
            else None
        )

    @property
    def causal(self) -> bool:
        """Output at t depends only on positions <= t: one-sided kernels (S4-v1 always)."""
        return not self.bidirectional

    def make_kernel(self) -> nn.Module:  # pragma: no cover - each subclass has its own
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "mixer": "s4",
            "version": self.version,
            "kernel": self.kernel_kind,
            "d_state": self.d_state,
            "n_ssm": self.n_ssm,
            "bidirectional": self.bidirectional,
            "normalization_type": self.normalization_type,
            "prenorm": self.prenorm,
            "num_hidden_layers": len(self.layers),
        }

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, L, d), mask (B, L) bool (True = real token) -> (B, L, d)."""
        keep = mask.to(torch.bool)
        zero_pad = keep.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        x = x * zero_pad
        for layer in self.layers:
            x = layer(x, keep)
        if self.final_norm is not None:
            x = self.final_norm(x, keep)
        return x * zero_pad


class S4V1Backbone(_S4Backbone):
    """S4-v1: causal DPLR LegS kernel, one Lambda shared by all features, no GLU. Defaults: the
    LRA Text recipe (4 layers, H 128, N 64, BatchNorm pre-norm, dropout 0)."""

    version = "v1"
    kernel_kind = "dplr"
    glu = False

    def __init__(
        self,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        d_state: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dropout_prob: float = 0.0,
        tie_dropout: bool = True,
        normalization_type: str = "batchnorm",
        prenorm: bool = True,
        norm_exclude_padding: bool = False,
        max_length: int | None = None,
    ) -> None:
        super().__init__(
            hidden_size, num_hidden_layers, d_state, None, dt_min, dt_max, False, dropout_prob,
            tie_dropout, normalization_type, prenorm, norm_exclude_padding, max_length,
        )  # fmt: skip

    def make_kernel(self) -> nn.Module:
        return DPLRKernel(
            self.hidden_size, self.d_state, channels=1, dt_min=self.dt_min,
            dt_max=self.dt_max, l_max=self.max_length, share_A=True,
        )  # fmt: skip


class S4V2Backbone(_S4Backbone):
    """S4-v2: DPLR LegS kernel, bidirectional, `n_ssm` copies, GLU. Defaults: the LRA Text
    recipe (6 layers, H 256, N 64, n_ssm = H, BatchNorm pre-norm, dropout 0)."""

    version = "v2"
    kernel_kind = "dplr"

    def __init__(
        self,
        hidden_size: int = 256,
        num_hidden_layers: int = 6,
        d_state: int = 64,
        n_ssm: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = True,
        dropout_prob: float = 0.0,
        tie_dropout: bool = True,
        normalization_type: str = "batchnorm",
        prenorm: bool = True,
        norm_exclude_padding: bool = False,
        max_length: int | None = None,
    ) -> None:
        super().__init__(
            hidden_size, num_hidden_layers, d_state, n_ssm, dt_min, dt_max, bidirectional,
            dropout_prob, tie_dropout, normalization_type, prenorm, norm_exclude_padding,
            max_length,
        )  # fmt: skip

    def make_kernel(self) -> nn.Module:
        return DPLRKernel(
            self.hidden_size, self.d_state, channels=2 if self.bidirectional else 1,
            n_ssm=self.n_ssm, dt_min=self.dt_min, dt_max=self.dt_max,
            l_max=self.max_length,
        )  # fmt: skip


class S4DBackbone(_S4Backbone):
    """S4D: the S4-v2 layer with the diagonal kernel. Defaults as `S4V2Backbone`, S4D-Lin, ZOH."""

    version = "s4d"
    kernel_kind = "diag"

    def __init__(
        self,
        hidden_size: int = 256,
        num_hidden_layers: int = 6,
        d_state: int = 64,
        n_ssm: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        init: str = "diag-lin",
        discretization: str = "zoh",
        bidirectional: bool = True,
        dropout_prob: float = 0.0,
        tie_dropout: bool = True,
        normalization_type: str = "batchnorm",
        prenorm: bool = True,
        norm_exclude_padding: bool = False,
        max_length: int | None = None,
    ) -> None:
        if init not in DIAG_INITS:
            raise ValueError(f"model.init={init!r}: expected one of {list(DIAG_INITS)}")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(
                f"model.discretization={discretization!r}: expected one of {list(DISCRETIZATIONS)}"
            )
        self.init, self.discretization = init, discretization
        super().__init__(
            hidden_size, num_hidden_layers, d_state, n_ssm, dt_min, dt_max, bidirectional,
            dropout_prob, tie_dropout, normalization_type, prenorm, norm_exclude_padding,
            max_length,
        )  # fmt: skip

    def make_kernel(self) -> nn.Module:
        return DiagKernel(
            self.hidden_size, self.d_state, channels=2 if self.bidirectional else 1,
            n_ssm=self.n_ssm, dt_min=self.dt_min, dt_max=self.dt_max, init=self.init,
            discretization=self.discretization,
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "init": self.init, "discretization": self.discretization}
