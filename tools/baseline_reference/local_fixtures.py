"""Reference outputs of the PyPI `local-attention` 1.11.2 (`LocalAttention`) for
tests/layers/baselines/test_local.py, written as data into
tests/layers/baselines/fixtures/local/.

The package lives in its own virtual env (``<repo>/.cache/local-attention-1.11.2``: torch from the
local CPU wheel plus ``local-attention==1.11.2`` and its dependencies), built by
``tools/hf_reference/envs.py``'s machinery and reached only through a subprocess. Run from the
repository root:

    python tools/baseline_reference/local_fixtures.py

How the package is aligned with the intended block-diagonal local attention
(reference/lra_baselines.md §3.7): `LocalAttention(window_size=w, causal=False, look_backward=0,
look_forward=0, autopad=True)`, without `dim` or `rel_pos_emb_config` (either would add rotary
embeddings), is softmax attention inside non-overlapping blocks of w with scale d^-1/2; its
`mask` (True = keep) masks padded keys. The package has no projections, so the generator draws
bias-free W_Q, W_K, W_V, W_O itself, applies them around the package's attention, and saves them
with the input, mask and output (float64). Only real rows are compared.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "layers" / "baselines" / "fixtures" / "local"
ENV_REQUIREMENTS = ("local-attention==1.11.2",)
# (name, width D, heads, window w, length L, real length of row 1)
CASES = (("w5_l23", 8, 2, 5, 23, 14), ("w8_l32", 12, 3, 8, 32, 9))


def generate() -> None:
    """Runs inside the side env: build each case with the package and save it."""
    import local_attention
    import torch

    OUT.mkdir(parents=True, exist_ok=True)
    for index, (name, dim, heads, window, length, real) in enumerate(CASES):
        torch.manual_seed(index)
        attn = local_attention.LocalAttention(
            window_size=window, causal=False, look_backward=0, look_forward=0, autopad=True
        ).eval()
        weights = {k: torch.randn(dim, dim, dtype=torch.float64) / dim**0.5 for k in "qkvo"}
        x = torch.randn(2, length, dim, dtype=torch.float64)
        mask = torch.ones(2, length, dtype=torch.bool)
        mask[1, real:] = False

        q, k, v = (  # (B, L, D) -> (B, h, L, d)
            (x @ weights[n].T).view(2, length, heads, dim // heads).transpose(1, 2) for n in "qkv"
        )
        with torch.no_grad():
            y = attn(q, k, v, mask=mask)  # (B, h, L, d)
        y = y.transpose(1, 2).reshape(2, length, dim) @ weights["o"].T
        torch.save(
            {
                "package": "local-attention 1.11.2",
                "torch": str(torch.__version__),
                "num_attention_heads": heads,
                "window_size": window,
                **{f"w_{n}": w for n, w in weights.items()},
                "x": x,
                "mask": mask,
                "y": y,
            },
            OUT / f"{name}.pt",
        )
        print(f"wrote {OUT / (name + '.pt')}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from tools.baseline_reference.side_env import package_spec, run_script

    run_script(
        __file__,
        generate,
        package_spec("local-attention-1.11.2", ENV_REQUIREMENTS, "local_attention"),
    )
