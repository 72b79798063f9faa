"""Reference outputs of the PyPI `performer-pytorch` 1.1.4 feature maps for
tests/layers/baselines/test_favor.py, written as data into
tests/layers/baselines/fixtures/performer/.

The package lives in its own virtual env (``<repo>/.cache/performer-pytorch-1.1.4``: torch from
the local CPU wheel plus the pinned package and its imports), built by
``tools/hf_reference/envs.py``'s machinery and reached only through a subprocess. Run from the
repository root:

    python tools/baseline_reference/performer_fixtures.py

How the package is aligned with LRA's Performer (reference/lra_baselines.md §3.4): the package's
own `gaussian_orthogonal_random_matrix` (scaling 0: Gaussian row norms) draws W and the fixture
stores it for the test to inject; `softmax_kernel` is called with eps=1e-6 (its default is 1e-4);
the ReLU case is `generalized_kernel(x, projection_matrix=None, kernel_fn=ReLU(),
kernel_epsilon=1e-3, normalize_data=False)` (LRA's deterministic features); both go through the
package's `linear_attention`, which has no denominator stabiliser (ours only acts on |R| <= 1e-6,
never reached here). The package masks nothing, so every input is unpadded. Q/K/V/out are plain
bias-free matmuls with the stored weights around the package's per-head attention. All float64.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "layers" / "baselines" / "fixtures" / "performer"
ENV_REQUIREMENTS = (
    "performer-pytorch==1.1.4",
    "einops==0.8.2",
    "local-attention==1.11.2",
    "axial-positional-embedding==0.3.12",
    "hyper-connections==0.4.11",  # local-attention's imports, pinned as resolved
    "torch-einops-utils==0.2.0",
)
# (name, kernel, hidden D, heads, qkv width, random features m, batch, length)
CASES = (
    ("relu", "relu", 8, 2, 12, 0, 2, 9),
    ("softmax", "softmax", 8, 2, 12, 10, 2, 9),
)


def generate() -> None:
    """Runs inside the side env: build each case with the package and save it."""
    import performer_pytorch
    import torch
    from performer_pytorch.performer_pytorch import (
        gaussian_orthogonal_random_matrix,
        generalized_kernel,
        linear_attention,
        softmax_kernel,
    )

    OUT.mkdir(parents=True, exist_ok=True)
    for index, (name, kernel, dim, heads, qkv, m, batch, length) in enumerate(CASES):
        torch.manual_seed(index)
        d = qkv // heads
        weights = {
            key: torch.randn(shape, dtype=torch.float64) / shape[1] ** 0.5
            for key, shape in (
                ("query", (qkv, dim)),
                ("key", (qkv, dim)),
                ("value", (qkv, dim)),
                ("out", (dim, qkv)),
            )
        }
        x = torch.randn(batch, length, dim, dtype=torch.float64)

        q, k, v = (  # (B, h, L, d)
            (x @ weights[key].T).view(batch, length, heads, d).transpose(1, 2)
            for key in ("query", "key", "value")
        )
        if kernel == "relu":
            w = torch.zeros(0, d, dtype=torch.float64)
            fq, fk = (
                generalized_kernel(
                    t,
                    projection_matrix=None,
                    kernel_fn=torch.nn.ReLU(),
                    kernel_epsilon=1e-3,
                    normalize_data=False,
                )
                for t in (q, k)
            )
        else:
            w = gaussian_orthogonal_random_matrix(m, d, scaling=0).double()
            fq = softmax_kernel(q, projection_matrix=w, is_query=True, eps=1e-6)
            fk = softmax_kernel(k, projection_matrix=w, is_query=False, eps=1e-6)
        y = linear_attention(fq, fk, v)  # (B, h, L, d)
        y = y.transpose(1, 2).reshape(batch, length, qkv) @ weights["out"].T
        torch.save(
            {
                "package": "performer-pytorch "
                + getattr(performer_pytorch, "__version__", "1.1.4"),
                "torch": str(torch.__version__),
                "kernel": kernel,
                "hidden_size": dim,
                "num_attention_heads": heads,
                "qkv_size": qkv,
                "num_random_features": m,
                **weights,
                "projection": w,
                "x": x,
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
        package_spec("performer-pytorch-1.1.4", ENV_REQUIREMENTS, "performer_pytorch"),
    )
