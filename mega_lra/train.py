"""Training entry point (`python -m mega_lra.train`, `make train`).

The Lightning training pipeline is not implemented yet. Until it is, this command does NOT train:
it runs a short forward/backward smoke of a Mega stack on random data (the LRA Text layer sizes,
chunk 128) to show the installation works, and says so.
"""

from __future__ import annotations

import sys
import time

import torch

from mega_lra.bench import mega_fields
from mega_lra.configuration import MegaConfig
from mega_lra.layers import MegaBlock, run_blocks


def smoke(length: int = 1024, batch: int = 2, layers: int = 2) -> dict[str, float]:
    fields = mega_fields("text", length, chunked=True)  # the LRA Text config, chunk 128
    config = MegaConfig(**{**fields, "num_hidden_layers": layers})
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(MegaBlock(config) for _ in range(layers))
    x = torch.randn(batch, length, config.hidden_size, requires_grad=True)
    target = torch.randn(batch, length, config.hidden_size)
    start = time.perf_counter()
    out, _, _ = run_blocks(blocks, x)
    loss = (out - target).square().mean()
    loss.backward()
    seconds = time.perf_counter() - start
    grad_norm = sum(p.grad.norm().item() ** 2 for p in blocks.parameters()) ** 0.5
    if not torch.isfinite(out).all() or grad_norm == 0.0:
        raise RuntimeError("smoke forward/backward produced non-finite outputs or no gradient")
    return {"seconds": seconds, "loss": loss.item(), "grad_norm": grad_norm}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(
        "mega-lra: training is not implemented yet; this is NOT a training run.\n"
        "Running a forward/backward smoke of a 2-layer Mega-chunk stack (D=128, C=128, L=1024)."
    )
    if argv:
        print(f"(ignoring arguments {argv}: there is no training configuration yet)")
    result = smoke()
    print(
        f"smoke ok: forward+backward {result['seconds']:.3f}s, loss {result['loss']:.4f}, "
        f"grad norm {result['grad_norm']:.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
