"""Greedy and sampled generation for `MegaForCausalLM` with the exact decoding state.

HF's Mega generated through `GenerationMixin`, which transformers v5 removed with Mega; this is
the small loop its users need: one prompt pass that builds the per-layer state, then one token per
step. Prompts may be left-padded (attention_mask 0 on the left); chunks are aligned to each row's
first real token, so every row continues exactly as it would alone.
"""

from __future__ import annotations

import torch

FROM_CONFIG = object()  # default for token ids: take them from model.config


def _filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Keep the top-k and/or the smallest set of tokens with probability mass >= top_p."""
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # mass before this token suffices
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None | object = FROM_CONFIG,
    pad_token_id: int | None | object = FROM_CONFIG,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Returns (B, L + new) token ids. `eos_token_id` / `pad_token_id` default to the config's
    (pass None for no end token); rows that produced eos continue with the pad token, and
    generation stops when every row has finished."""
    if eos_token_id is FROM_CONFIG:
        eos_token_id = model.config.eos_token_id
    if pad_token_id is FROM_CONFIG:
        pad_token_id = model.config.pad_token_id
    if not model.config.is_decoder or model.config.bidirectional:
        raise ValueError(
            "generate needs a causal model: is_decoder=True and bidirectional=False in the config"
        )
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens}: expected >= 0")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature={temperature}: expected > 0 when sampling")
    was_training = model.training
    model.eval()
    batch = input_ids.size(0)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    fill = pad_token_id if pad_token_id is not None else (eos_token_id or 0)
    out = model(input_ids, attention_mask=attention_mask, use_cache=True)
    state = out.past_key_values
    logits = out.logits[:, -1]
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    tokens = [input_ids]
    for _ in range(max_new_tokens):
        if do_sample:
            scores = _filter_logits(logits.float() / temperature, top_k, top_p)
            next_ids = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
        else:
            next_ids = logits.argmax(-1)
        next_ids = torch.where(finished, torch.full_like(next_ids, fill), next_ids)
        tokens.append(next_ids[:, None])
        if eos_token_id is not None:
            finished |= next_ids == eos_token_id
            if bool(finished.all()):
                break
        step_mask = torch.ones(batch, 1, dtype=attention_mask.dtype, device=input_ids.device)
        out = model(next_ids[:, None], attention_mask=step_mask, past_key_values=state)
        state = out.past_key_values
        logits = out.logits[:, -1]
    model.train(was_training)
    return torch.cat(tokens, dim=1)
