"""Which SDPA kernels take Mega-chunk's softmax attention on this card, and how fast each is.

The LRA Text shapes at 4K, batch 25: q, k (B, n = L/128, 128, Z = 64), v (B, n, 128, H = 256),
bf16, the (128, 128) relative bias as a float mask that needs its gradient. For each kernel
alone (flash, memory-efficient, cuDNN, math) it runs forward+backward, or prints why it refused,
and checks the output and the bias gradient against the math kernel. Part of tools/gpu/check.sh.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def main() -> int:
    if not torch.cuda.is_available():
        print("probe: no CUDA device")
        return 0
    torch.manual_seed(0)
    batch, length, chunk, zdim, hdim = 25, 4096, 128, 64, 256
    shape = (batch, length // chunk, chunk)
    q = torch.randn(*shape, zdim, device="cuda", dtype=torch.bfloat16) * 0.5
    k = torch.randn(*shape, zdim, device="cuda", dtype=torch.bfloat16) * 0.5
    v = torch.randn(*shape, hdim, device="cuda", dtype=torch.bfloat16)
    table = (0.02 * torch.randn(2 * chunk - 1, device="cuda")).requires_grad_()
    pos = torch.arange(chunk, device="cuda")
    grad_out = torch.randn(*shape, hdim, device="cuda", dtype=torch.bfloat16)

    def step():
        bias = table[chunk - 1 + pos[None, :] - pos[:, None]].to(torch.bfloat16)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=zdim**-0.5)
        (grad,) = torch.autograd.grad(out, table, grad_out)
        return out, grad

    results = {}
    for backend in (
        SDPBackend.MATH,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.FLASH_ATTENTION,
    ):
        name = backend.name
        try:
            with sdpa_kernel([backend]):
                out, grad = step()
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(5):
                    step()
                torch.cuda.synchronize()
            ms = (time.perf_counter() - start) / 5 * 1000
        except RuntimeError as err:
            print(f"probe: {name:20s} refused: {str(err).splitlines()[0][:150]}")
            continue
        results[name] = (out, grad)
        line = f"probe: {name:20s} fwd+bwd {ms:7.2f} ms"
        if name != "MATH" and "MATH" in results:
            ref_out, ref_grad = results["MATH"]
            err_out = ((out.float() - ref_out.float()).norm() / ref_out.float().norm()).item()
            err_grad = ((grad - ref_grad).norm() / ref_grad.norm()).item()
            line += f"  rel. error vs math: output {err_out:.1e}, bias grad {err_grad:.1e}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
