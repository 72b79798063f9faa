"""Which kernel runs Mega's softmax attention, and the two fused ones for CUDA.

`MegaConfig.attention_backend` picks the kernel of softmax attention (eq. 11 with f = softmax:
O = softmax(q k^T / sqrt(Z) + b_rel + mask) v within each chunk); `resolve_backend` turns it into
the one used for a given call:

- `reference`: `blocked_attention.py`, plain torch ops with O(L * block) memory; the CPU path,
  and the one every other path is tested against. Runs anywhere.
- `sdpa`: `F.scaled_dot_product_attention` with the bias as a float mask; on CUDA its
  memory-efficient kernel (a float bias with its gradient, value width H != Z). Runs anywhere.
- `flex`: FlexAttention under torch.compile: a `score_mod` reading the bias table, a block mask
  for chunks, padding and causality built from the chunk structure. Trains on CUDA only
  (FlexAttention has no CPU backward); its forward runs eagerly on CPU.
- `auto`: `CUDA_AUTO` on CUDA, `reference` elsewhere.

Laplace and relu2 attention always take the blocked path (`blocked_element_attention`), which
runs on any device and keeps no L x L matrix. `flex` is never used while
`torch.are_deterministic_algorithms_enabled()` (its compiled backward adds the bias-table
gradient with atomic adds): it falls back to `sdpa`, with a warning when it was asked for.

Both fused paths compute exactly the reference's function (tests/layers/test_gpu_attention.py):
- scores q k^T * Z^-1/2 first, then + bias (the rotary bias a_i . b_j is folded in as Z more
  columns of q and k: q' = [q Z^-1/2, a], k' = [k, b]);
- a key is visible when it is real (HF mask, 1 = keep), in the query's chunk, and (causal) not
  later; a query row with no visible real key (an all-padding chunk; a causal row before the
  first real key) attends to its chunk's keys without the padding mask instead of giving NaN;
- under autocast q, k, v (and the float mask) are cast to the autocast dtype; both kernels
  accumulate scores and the softmax in float32.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "reference", "sdpa", "flex")
# What "auto" picks for softmax attention on CUDA: to be set to the faster kernel from the card's
# benchmark (`tools/gpu/check.sh`, docs/gpu.md). Until measured: sdpa, which needs no compilation
# and has a deterministic mode.
CUDA_AUTO = "sdpa"
# Query and key block of the flex block mask (the Triton kernel's default tile).
FLEX_BLOCK = 128


def compute_dtype(device_type: str, *tensors: torch.Tensor) -> torch.dtype:
    """The tensors' promoted dtype, or the autocast dtype when autocast is on for this device
    type and that dtype is float32 or lower (autocast leaves float64 alone)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype != torch.float64 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


def resolve_backend(
    requested: str,
    device: torch.device,
    *,
    softmax: bool,
    dropout: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> str:
    """The backend that runs this call: `reference`, `sdpa` or `flex` (see the module doc);
    `dtype` is the compute dtype (flex's kernels take float16, bfloat16 and float32 only)."""
    if requested not in BACKENDS:
        raise ValueError(f"attention_backend={requested!r}: expected one of {list(BACKENDS)}")
    if not softmax:
        return "reference"
    backend = requested
    if backend == "auto":
        backend = CUDA_AUTO if device.type == "cuda" else "reference"
    if backend == "flex":
        if dropout or dtype not in (torch.float16, torch.bfloat16, torch.float32):
            return "sdpa"  # FlexAttention has no attention dropout, no float64 kernel
        if torch.are_deterministic_algorithms_enabled():
            if requested == "flex":
                _warn_deterministic()
            return "sdpa"
    return backend


@functools.lru_cache(maxsize=1)
def _warn_deterministic() -> None:
    warnings.warn(
        "attention_backend='flex': deterministic algorithms are enabled and FlexAttention's "
        "compiled backward adds the bias-table gradient with atomic adds; using 'sdpa' instead",
        stacklevel=4,
    )


# ------------------------------------------------------------------------------------- SDPA
def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v for q, k (B, n, C, Zq), v (B, n, C, H), mask a float
    bias (with its gradient) or bool (True = attend), broadcastable to (B, n, C, C).

    Inputs are cast to one dtype (the autocast dtype under autocast), as the fused kernels need.
    On CUDA only the memory-efficient and math kernels are allowed: flash takes no mask, and
    cuDNN refuses masks that need a gradient and has known wrong-result bugs with float masks.
    """
    dtype = compute_dtype(q.device.type, q, k, v)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(dtype)
    if q.device.type != "cuda":
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale
        )
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale
        )


def hankel_bias(table: torch.Tensor, center: int, length: int) -> torch.Tensor:
    """(L, L) bias[i, j] = table[center + j - i] as a flipped sliding window of the table
    (`unfold`), so its gradient is a deterministic sum over windows, not a scatter-add."""
    first = center - (length - 1)  # table index of bias[L-1, 0]
    window = table[first : first + 2 * length - 1].unfold(0, length, 1)  # [i', j] = t[first+i'+j]
    return window.flip(0)  # row i = L-1-i'


# ------------------------------------------------------------------------------ FlexAttention
def lonely_rows(key_real: torch.Tensor, chunk: int, causal: bool) -> torch.Tensor:
    """(B, L) bool: query rows that see no real key in their chunk (chunks of `chunk` positions
    from 0; the last may be cut short), i.e. the rows that attend without the padding mask.
    Causal: no real key at or before the row within its chunk."""
    length = key_real.size(1)
    pos = torch.arange(length, device=key_real.device)
    start = pos - pos % chunk  # first position of each row's chunk
    counts = F.pad(key_real.to(torch.int32).cumsum(-1), (1, 0))  # (B, L+1): real keys before i
    upto = pos + 1 if causal else torch.clamp(start + chunk, max=length)
    return (counts[:, upto] - counts[:, start]) == 0


def chunk_mask_mod(
    chunk: int, causal: bool, key_real: torch.Tensor | None, lonely: torch.Tensor | None
) -> Callable:
    """mask_mod(b, h, q, kv): kv is in q's chunk, (causal) not later, and real unless q is a
    lonely row."""
    if key_real is None:
        if causal:
            return lambda b, h, q, kv: ((q // chunk) == (kv // chunk)) & (kv <= q)
        return lambda b, h, q, kv: (q // chunk) == (kv // chunk)
    if causal:
        return lambda b, h, q, kv: (
            ((q // chunk) == (kv // chunk)) & (kv <= q) & (key_real[b, kv] | lonely[b, q])
        )
    return lambda b, h, q, kv: ((q // chunk) == (kv // chunk)) & (key_real[b, kv] | lonely[b, q])


def chunk_block_mask(
    batch: int,
    length: int,
    chunk: int,
    causal: bool,
    key_real: torch.Tensor | None,
    lonely: torch.Tensor | None,
    device: torch.device,
    block: int = FLEX_BLOCK,
):
    """The `BlockMask` of `chunk_mask_mod`, built from the chunk structure in O(B (L/block)^2)
    (`create_block_mask` would evaluate the mask on all B L^2 pairs).

    For query block i and key block j: some pair can be visible iff their chunk ranges overlap,
    (causal) j <= i, and the key block holds a real key or the query block a lonely row; every
    pair is visible ("full" block: the kernel skips mask_mod) iff both blocks lie in one chunk,
    (causal) j < i, and every key of the block is real. Other blocks are partial (mask_mod runs).
    """
    from torch.nn.attention.flex_attention import BlockMask

    if length % block:
        raise ValueError(f"length {length} is not a multiple of the flex block {block}")
    nb = length // block
    starts = torch.arange(nb, device=device) * block
    first_chunk, last_chunk = starts // chunk, (starts + block - 1) // chunk  # (nb,)
    overlap = (first_chunk[:, None] <= last_chunk[None, :]) & (
        first_chunk[None, :] <= last_chunk[:, None]
    )  # (nb_q, nb_k)
    single = first_chunk == last_chunk
    same = overlap & single[:, None] & single[None, :] & (first_chunk[:, None] == first_chunk)
    some = overlap
    every = same
    if causal:
        idx = torch.arange(nb, device=device)
        some = some & (idx[None, :] <= idx[:, None])
        every = every & (idx[None, :] < idx[:, None])
    some, every = some[None], every[None]  # (1, nb, nb)
    if key_real is not None:
        blocks = key_real.view(batch, nb, block)
        has_real, all_real = blocks.any(-1), blocks.all(-1)  # (B, nb_k)
        has_lonely = lonely.view(batch, nb, block).any(-1)  # (B, nb_q)
        some = some & (has_real[:, None, :] | has_lonely[:, :, None])
        every = every & all_real[:, None, :]
    partial = some & ~every

    def ordered(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (B|1, nb, nb) bool -> counts (B|1, 1, nb) and the block indices, listed first
        counts = dense.sum(-1, dtype=torch.int32)
        order = torch.argsort(dense.to(torch.int8), dim=-1, descending=True, stable=True)
        return counts[:, None], order.to(torch.int32)[:, None]

    kv_num, kv_idx = ordered(partial)
    full_num, full_idx = ordered(every)
    return BlockMask.from_kv_blocks(
        kv_num,
        kv_idx,
        full_num,
        full_idx,
        BLOCK_SIZE=block,
        mask_mod=chunk_mask_mod(chunk, causal, key_real, lonely),
        seq_lengths=(length, length),
    )


@functools.lru_cache(maxsize=1)
def _compiled_flex() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def flex_chunk_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    chunk: int,
    causal: bool,
    key_real: torch.Tensor | None,
    table: torch.Tensor | None,
    center: int,
    *,
    compiled: bool | None = None,
    block: int = FLEX_BLOCK,
) -> torch.Tensor:
    """Chunked softmax attention of whole rows: q, k (B, L, Zq) with q pre-scaled (and the
    rotary bias folded in), v (B, L, H), L a multiple of chunk; key_real (B, L) bool or None;
    table: the simple bias table, bias[i, j] = table[center + j - i] for i, j in one chunk.
    Returns (B, L, H). `compiled` (default: on CUDA) runs the fused Triton kernel; eager
    FlexAttention materialises the scores and has no CPU backward."""
    from torch.nn.attention.flex_attention import flex_attention

    batch, length, _ = q.shape
    dtype = compute_dtype(q.device.type, q, k, v)
    padded = -(-length // block) * block
    if padded != length or key_real is not None:
        if key_real is None:
            key_real = torch.ones(batch, length, dtype=torch.bool, device=q.device)
        extra = padded - length
        q, k, v = (F.pad(t, (0, 0, 0, extra)) for t in (q, k, v))
        key_real = F.pad(key_real, (0, extra), value=False)
    # chunk = L (full attention) puts the extra keys of the block padding in another chunk
    lonely = None if key_real is None else lonely_rows(key_real, chunk, causal)
    block_mask = chunk_block_mask(batch, padded, chunk, causal, key_real, lonely, q.device, block)
    score_mod = None
    if table is not None:
        last = table.numel() - 1

        def score_mod(score, b, h, qi, kv):
            return score + table[(center + kv - qi).clamp(0, last)]

    if compiled is None:
        compiled = q.device.type == "cuda"
    fn = _compiled_flex() if compiled else flex_attention
    with warnings.catch_warnings():
        # eager (CPU) FlexAttention warns that it materialises the scores: known and intended
        warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
        out = fn(
            q.to(dtype)[:, None],
            k.to(dtype)[:, None],
            v.to(dtype)[:, None],
            score_mod=score_mod,
            block_mask=block_mask,
            scale=1.0,
        )
    return out[:, 0, :length]
