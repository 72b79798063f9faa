"""`PretrainModel`: the classifier's encoder, positions, backbone and final norm, with a
per-position head (`lm_head`, Linear(d, outputs)) in place of pooling and the classifier head.

It is built from the very `LRAClassifier` that fine-tuning builds (same model node, same task),
so every encoder and backbone tensor has the same name and shape in both stages; the state-dict
keys that differ are exactly:

- `lm_head.*`: the per-position head (vocabulary size for tokens, 256 grey levels, 1 value);
- `mask_embedding` (tokens, masked objective): the learned input vector of a masked position,
  looked up for `mask_id` (the id one past the vocabulary), times the encoder's scale;
- `mask_channel` (pixels / audio, masked objective): the weight of the mask flag m, so that the
  input embedding is x (1 - m) w + m w_mask + b, the linear map of NFS's two channels
  [x (1 - m), m] with the encoder's own w and b as its first column and bias.

and the classifier's `classifier.*` head, which fine-tuning initialises afresh.

`forward(batch)` takes a corrupted batch (`mega_lra.pretraining.masking`): `input_ids` (B, L),
or `inputs` (B, L) float with `spt_flag` (B, L) the mask flags, plus `attention_mask`, and
returns (B, L, outputs). Retrieval pairs arrive already split into 2B single documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mega_lra.models.classifier import LRAClassifier
from mega_lra.pretraining.objectives import Objective

SPT_ONLY_KEYS = ("mask_embedding", "mask_channel")  # besides lm_head.*


@torch.no_grad()
def random_init(model: nn.Module, std: float) -> None:
    """The random-init ablation (Amos et al. §3.3, NFS `train.rand_init`): every parameter of
    `model` (encoder, backbone, norms, heads, mask vectors) drawn afresh from N(0, std^2), with
    the global torch generator; buffers (positions, fixed kernels) are kept."""
    for param in model.parameters():
        param.normal_(mean=0.0, std=std)


class PretrainModel(nn.Module):
    def __init__(self, classifier: LRAClassifier, objective: Objective) -> None:
        super().__init__()
        self.objective = objective
        self.encoder = classifier.encoder
        self.positions = classifier.positions
        self.backbone = classifier.backbone
        self.final_norm = classifier.final_norm
        self.backbone_path = classifier.backbone_path
        self.label = classifier.label
        self.input_kind = classifier.input_kind
        self.head_kind = classifier.head_kind
        self.hidden_size = d = classifier.hidden_size
        self.pad_multiple = classifier.pad_multiple
        self.classifier_info = classifier.describe()
        tokens = objective.target == "tokens"
        if objective.kind == "masked" and tokens:
            std = float(getattr(self.encoder, "std", d**-0.5))
            self.mask_embedding = nn.Parameter(torch.randn(d) * std)
        elif objective.kind == "masked":
            self.mask_channel = nn.Parameter(torch.randn(d))  # as the encoder's w: N(0, 1)
        self.lm_head = nn.Linear(d, objective.outputs)
        nn.init.xavier_uniform_(self.lm_head.weight)
        nn.init.zeros_(self.lm_head.bias)

    def describe(self) -> dict[str, Any]:
        return dict(self.classifier_info)

    def embed(self, batch: Mapping[str, torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
        """Corrupted inputs (B, L) -> (B, L, d), the mask token / flag included."""
        if "input_ids" in batch:
            ids = batch["input_ids"]
            if self.objective.mask_id is None:
                h = self.encoder(ids)
            else:
                masked = ids == self.objective.mask_id  # (B, L)
                h = self.encoder(ids.masked_fill(masked, self.encoder.embed.padding_idx))
                vector = self.mask_embedding * getattr(self.encoder, "scale", 1.0)
                h = torch.where(masked.unsqueeze(-1), vector.to(h.dtype), h)
        else:
            h = self.encoder(batch["inputs"])  # x (1 - m) w + b
            if self.objective.kind == "masked":
                flag = batch["spt_flag"].to(h.dtype).unsqueeze(-1)  # (B, L, 1)
                h = h + flag * self.mask_channel
        return h if self.positions is None else self.positions(h, keep)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        keep = batch["attention_mask"].to(torch.bool)
        hidden = self.backbone(self.embed(batch, keep), keep)  # (B, L, d)
        if self.final_norm is not None:
            hidden = self.final_norm(hidden) * keep.unsqueeze(-1).to(hidden.dtype)
        return self.lm_head(hidden)  # (B, L, outputs)
