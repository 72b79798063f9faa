"""Fixtures for tests/layers/baselines/test_block_sparse.py: transformers'
`BigBirdBlockSparseAttention` (the HF reference env, tools/hf_reference/envs.py) on small float64
inputs, in train mode (HF draws no random blocks in eval) with no biases, and the random blocks it
drew, which the test pins into mega-lra's layer.

Run from the repository root (standard library + the reference env only):

    python tools/baseline_reference/bigbird_fixtures.py

which re-runs this file under the reference env's python and writes
tests/layers/baselines/fixtures/bigbird/hf_block_sparse.npz.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "layers" / "baselines" / "fixtures" / "bigbird" / "hf_block_sparse.npz"
# (hidden, heads, block, random blocks, length, real lengths): 12 and 20 blocks, padding masked
CASES = {"small": (8, 2, 4, 2, 48, (48, 30)), "wide": (12, 3, 2, 3, 40, (40, 27))}


def generate() -> None:
    import numpy as np
    import torch
    import transformers
    from transformers import BigBirdConfig
    from transformers.models.big_bird import modeling_big_bird as hf

    arrays = {"transformers_version": np.array(transformers.__version__)}
    for name, (hidden, heads, block, rand, length, lengths) in CASES.items():
        torch.manual_seed(0)
        config = BigBirdConfig(
            hidden_size=hidden,
            num_attention_heads=heads,
            block_size=block,
            num_random_blocks=rand,
            use_bias=False,
            attention_type="block_sparse",
            max_position_embeddings=length,
        )
        attn = hf.BigBirdBlockSparseAttention(config, seed=0).double().train()
        drawn = []
        draw = attn._bigbird_block_rand_mask_with_head

        def record(*args, _draw=draw, _drawn=drawn, **kwargs):
            out = _draw(*args, **kwargs)
            _drawn.append(np.stack(out, axis=0))
            return out

        attn._bigbird_block_rand_mask_with_head = record
        x = torch.randn(2, length, hidden, dtype=torch.float64)
        mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).double()
        blocked, band, from_mask, to_mask = hf.BigBirdModel.create_masks_for_block_sparse_attn(
            mask, block
        )
        with torch.no_grad():
            (context,) = attn(x, band, from_mask, to_mask, blocked, blocked)
        assert len(drawn) == 1, "expected one draw through _bigbird_block_rand_mask_with_head"
        arrays.update(
            {
                f"{name}/x": x.numpy(),
                f"{name}/mask": mask.numpy().astype(bool),
                f"{name}/w_query": attn.query.weight.detach().numpy(),
                f"{name}/w_key": attn.key.weight.detach().numpy(),
                f"{name}/w_value": attn.value.weight.detach().numpy(),
                f"{name}/random_blocks": drawn[0].astype(np.int64),  # (h, n-2, r)
                f"{name}/context": context.numpy(),  # (B, L, h * d), before any output layer
                f"{name}/config": np.array([hidden, heads, block, rand]),
            }
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT.relative_to(ROOT)} (transformers {transformers.__version__})")


def main() -> int:
    if "--in-env" in sys.argv:
        generate()
        return 0
    sys.path.insert(0, str(ROOT))
    from tools.hf_reference.envs import ensure_env

    python = ensure_env()
    return subprocess.call([str(python), __file__, "--in-env"], cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main())
