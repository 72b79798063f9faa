"""Reference outputs of transformers' `LSHSelfAttention` (Reformer) for
tests/layers/baselines/test_lsh.py, written as data into
tests/layers/baselines/fixtures/reformer/.

Runs in the project's transformers reference env (``<repo>/.cache/hf-reference-4.41.2``, built by
``tools/hf_reference/envs.py``; its LSHSelfAttention is the code of 4.46 as well), reached only
through a subprocess. Run from the repository root:

    python tools/baseline_reference/reformer_fixtures.py

How the module is aligned with ours (reference/lra_baselines.md §3.1): `is_decoder=False`, dropout
0, eval mode, a fixed `hash_seed` (its rotations, (h, d, R, n_buckets/2) from
`torch.manual_seed(seed); torch.randn(...)`, are saved for the test to inject), one hash round
(transformers sorts several rounds together and does not de-duplicate), no padding (it puts
padding into an extra bucket but keeps the wrap-around onto padded chunks), and a chunk length of
L / num_buckets (our `num_buckets` chunking). Its keys are x / rms(x) / sqrt(d) = x / ||x|| (up to
its eps 1e-6) and its logits are not divided again, so the test calls our attention with scale 1.
Each fixture holds the two projection weights, the rotations, the input, transformers' buckets
and output (merged heads, before any output projection), all float64.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "layers" / "baselines" / "fixtures" / "reformer"
# (name, hidden size, heads, head size, length, chunk length, num_buckets, hash_seed)
CASES = (
    ("lsh_h2_l32", 8, 2, 4, 32, 8, 4, 7),
    ("lsh_h3_l48", 12, 3, 6, 48, 6, 8, 11),
)


def generate() -> None:
    """Runs inside the side env: build each case with transformers and save it."""
    import torch
    import transformers
    from transformers import ReformerConfig
    from transformers.models.reformer.modeling_reformer import LSHSelfAttention

    OUT.mkdir(parents=True, exist_ok=True)
    for index, (name, hidden, heads, head, length, chunk, buckets, seed) in enumerate(CASES):
        config = ReformerConfig(
            hidden_size=hidden,
            num_attention_heads=heads,
            attention_head_size=head,
            attn_layers=["lsh"],
            lsh_attn_chunk_length=chunk,
            lsh_num_chunks_before=1,
            lsh_num_chunks_after=0,
            num_buckets=buckets,
            num_hashes=1,
            hash_seed=seed,
            is_decoder=False,
            lsh_attention_probs_dropout_prob=0.0,
        )
        torch.manual_seed(100 + index)
        attn = LSHSelfAttention(config).double().eval()
        x = torch.randn(2, length, hidden, dtype=torch.float64)
        with torch.no_grad():
            out = attn(x, output_attentions=False)
        torch.manual_seed(seed)
        rotations = torch.randn(heads, head, 1, buckets // 2, dtype=torch.float64)
        torch.save(
            {
                "package": f"transformers {transformers.__version__}",
                "torch": str(torch.__version__),
                "num_attention_heads": heads,
                "chunk_length": chunk,
                "num_buckets": buckets,
                "hash_seed": seed,
                "query_key": attn.query_key.weight.clone(),
                "value": attn.value.weight.clone(),
                "rotations": rotations,
                "x": x,
                "buckets": out.buckets.clone(),  # (B, h, R * L)
                "y": out.hidden_states.clone(),  # (B, L, h * d)
            },
            OUT / f"{name}.pt",
        )
        print(f"wrote {OUT / (name + '.pt')}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from tools.baseline_reference.side_env import run_script

    run_script(__file__, generate)
