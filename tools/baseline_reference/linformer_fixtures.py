"""Reference outputs of the PyPI `linformer` 0.2.3 (`LinformerSelfAttention`) for
tests/layers/baselines/test_low_rank.py, written as data into
tests/layers/baselines/fixtures/linformer/.

The package lives in its own virtual env (``<repo>/.cache/linformer-0.2.3``: torch from the local
CPU wheel plus ``linformer==0.2.3``), built by ``tools/hf_reference/envs.py``'s machinery and
reached only through a subprocess. Run from the repository root:

    python tools/baseline_reference/linformer_fixtures.py

How the package is aligned with LRA's Linformer (reference/lra_baselines.md §3.2): it has separate
length projections `proj_k` and `proj_v` and a biased `to_out`; for the key-value-shared case the
same E is copied into both and the `to_out` bias is zeroed (its `share_kv=True` would also tie the
K and V *linear* projections, which LRA does not). The separate case keeps two different matrices
(the paper's E and F). The package masks nothing, so every input here is unpadded. Each fixture
holds the weights the test loads into `LowRankAttention`, the input and the package's output, all
float64.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "layers" / "baselines" / "fixtures" / "linformer"
ENV_REQUIREMENTS = ("linformer==0.2.3",)
# (name, share E between K and V, dim, heads, max_length n, projected_length k, input length L)
CASES = (
    ("shared_kv", True, 8, 2, 12, 4, 10),
    ("separate_kv", False, 8, 2, 12, 4, 12),
)


def generate() -> None:
    """Runs inside the side env: build each case with the package and save it."""
    import linformer
    import torch

    OUT.mkdir(parents=True, exist_ok=True)
    for index, (name, shared, dim, heads, n, k, length) in enumerate(CASES):
        torch.manual_seed(index)
        attn = linformer.LinformerSelfAttention(dim, n, k=k, heads=heads, share_kv=False).double()
        with torch.no_grad():
            if shared:
                attn.proj_v.copy_(attn.proj_k)
            attn.to_out.bias.zero_()
        attn.eval()
        x = torch.randn(2, length, dim, dtype=torch.float64)
        with torch.no_grad():
            y = attn(x)
        torch.save(
            {
                "package": f"linformer {getattr(linformer, '__version__', '0.2.3')}",
                "torch": str(torch.__version__),
                "share_kv": shared,
                "num_attention_heads": heads,
                "max_length": n,
                "projected_length": k,
                "query": attn.to_q.weight.clone(),
                "key": attn.to_k.weight.clone(),
                "value": attn.to_v.weight.clone(),
                "out": attn.to_out.weight.clone(),
                "key_projection": attn.proj_k.detach().clone(),
                "value_projection": attn.proj_v.detach().clone(),
                "x": x,
                "y": y,
            },
            OUT / f"{name}.pt",
        )
        print(f"wrote {OUT / (name + '.pt')}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from tools.baseline_reference.side_env import package_spec, run_script

    run_script(__file__, generate, package_spec("linformer-0.2.3", ENV_REQUIREMENTS, "linformer"))
