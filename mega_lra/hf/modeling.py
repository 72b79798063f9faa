"""The Hugging Face Mega model family, weight-compatible with transformers 4.28-4.57's Mega.

`MegaModel` (embeddings -> Mega blocks -> optional pooler) and six heads with HF's module names,
so `state_dict()` keys equal HF's, forward arguments and output attribute names follow HF, and
`from_pretrained` / `save_pretrained` (in `mega_lra.hf.pretrained`) read and write HF checkpoint
folders.

Where HF's Mega is wrong, mega-lra is correct (see docs/hf_compat.md): RMSNorm normalises (set
`rmsnorm_hf_compat=True` to reproduce HF's outputs for HF rmsnorm checkpoints); the decoding
state is exact for laplace/relu2, chunking and truncation; left-padded decoders give no NaN;
there is no stale eval-mode EMA cache; chunking works for any length.

`past_key_values` is a list with one `mega_lra.layers.AttentionState` per layer (not HF's
3-tuples): the EMA state (and, with truncation, the input window) plus the keys/values of each
row's current chunk. Reorder it for beam search with `state.index_select(rows)`.
Cross-attention (`add_cross_attention`) is not supported; such configs are refused.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mega_lra.hf.configuration import ConfigError, MegaConfig
from mega_lra.hf.outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from mega_lra.hf.pretrained import PretrainedMixin
from mega_lra.layers.block import MegaBlock, run_blocks
from mega_lra.layers.gated_attention import AttentionState
from mega_lra.layers.norms import SequenceNorm


class MegaPreTrainedModel(PretrainedMixin, nn.Module):
    """Shared initialisation and embedding handling for the Mega family; loading, saving and
    vocabulary resizing come from `PretrainedMixin` (`mega_lra/hf/pretrained.py`).

    The surface of transformers' `PreTrainedModel` that code written for HF's Mega touches:
    `from_pretrained` (with `config=`, `torch_dtype`/`dtype`, `ignore_mismatched_sizes`, `strict`,
    `output_loading_info`, `device_map`), `save_pretrained` (safetensors or `.bin`, sharding),
    `resize_token_embeddings`, `get_/set_input_embeddings`, `get_/set_output_embeddings`,
    `tie_weights`, `num_parameters`, `gradient_checkpointing_enable/disable`, `can_generate`."""

    config_class = MegaConfig
    base_model_prefix = "mega"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _tied_head: str | None = None  # attribute holding the LM head tied to the word embeddings

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        if not isinstance(config, MegaConfig):
            raise TypeError(f"expected a MegaConfig, got {type(config).__name__}")
        if config.add_cross_attention:
            raise ConfigError(
                "MegaConfig.add_cross_attention=True: cross-attention is out of scope for "
                "mega-lra; this checkpoint/config cannot be used"
            )
        with warnings.catch_warnings():  # the config warned when built; re-check its values only
            warnings.simplefilter("ignore")
            config.validate()  # attributes may have been set since the config was built
        self.config = config

    # ------------------------------------------------------------------ init
    def post_init(self) -> None:
        self.apply(self._init_weights)
        self.tie_weights()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    # ------------------------------------------------------------ embeddings
    @property
    def base_model(self) -> MegaModel:
        """The `MegaModel` inside a head (the model itself for `MegaModel`)."""
        return getattr(self, self.base_model_prefix, self)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.embedding_layer.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        if not isinstance(value, nn.Embedding) or value.embedding_dim != self.config.hidden_size:
            raise ValueError(
                f"set_input_embeddings: expected an nn.Embedding of dimension "
                f"{self.config.hidden_size}, got {value!r}"
            )
        self.base_model.embedding_layer.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear | None:
        """The vocabulary projection of the LM heads; None for the other classes (as HF)."""
        return getattr(self, self._tied_head) if self._tied_head else None

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        if not self._tied_head:
            raise AttributeError(f"{type(self).__name__} has no output embeddings (no LM head)")
        setattr(self, self._tied_head, new_embeddings)

    def tie_weights(self) -> None:
        """Share the LM head's weight with the word embeddings when `tie_word_embeddings`; the
        head's bias is padded with zeros (or cut) to the vocabulary, as transformers does."""
        head = self.get_output_embeddings()
        if head is None or not self.config.tie_word_embeddings:
            return
        embeddings = self.get_input_embeddings()
        head.weight = embeddings.weight
        rows = embeddings.num_embeddings
        if head.bias is not None and head.bias.shape[0] != rows:
            with torch.no_grad():
                bias = head.bias.new_zeros(rows)
                keep = min(rows, head.bias.shape[0])
                bias[:keep] = head.bias[:keep]
            head.bias = nn.Parameter(bias, requires_grad=head.bias.requires_grad)
        head.out_features = rows

    # ---------------------------------------------------------------- misc HF
    @classmethod
    def can_generate(cls) -> bool:
        """True for `MegaForCausalLM` (it has `generate`), False for the other classes."""
        return False

    @property
    def name_or_path(self) -> str:
        return self.config.name_or_path

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict | None = None, **_: Any
    ) -> None:
        """Recompute each Mega block in the backward pass (HF's Mega refused this)."""
        self.base_model.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.base_model.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.base_model, "gradient_checkpointing", False))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (a tied head is not counted twice), as HF."""
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        seen = {}
        for p in self.parameters():
            if id(p) not in skip and (not only_trainable or p.requires_grad):
                seen[id(p)] = p.numel()
        return sum(seen.values())

    def _encode(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        output_hidden_states: bool | None,
        output_attentions: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        """Run the heads' `MegaModel` (attribute `mega`) and return its output object."""
        return self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )


class MegaEmbeddings(nn.Module):
    """Word embeddings (+ token-type embeddings); no positions, no norm, no scaling (as HF)."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.use_token_types = config.add_token_type_embeddings
        if self.use_token_types:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if self.use_token_types:
            if token_type_ids is None:
                token_type_ids = torch.zeros(
                    inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device
                )
            inputs_embeds = inputs_embeds + self.token_type_embeddings(token_type_ids)
        return inputs_embeds


class MegaPooler(nn.Module):
    """tanh(dense(first token))."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def _check_inputs(
    vocab_size: int,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
) -> tuple[int, int]:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    shape = tuple(input_ids.shape) if input_ids is not None else tuple(inputs_embeds.shape[:-1])
    if len(shape) != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {shape}")
    if input_ids is not None and input_ids.numel():
        low, high = (int(v) for v in torch.aminmax(input_ids))
        if low < 0 or high >= vocab_size:
            raise ValueError(
                f"input_ids hold ids in [{low}, {high}], outside the vocabulary [0, {vocab_size})"
            )
    if token_type_ids is not None and tuple(token_type_ids.shape) != shape:
        raise ValueError(
            f"token_type_ids shape {tuple(token_type_ids.shape)} != input shape {shape}"
        )
    if attention_mask is not None and (
        attention_mask.dim() != 2 or attention_mask.size(0) != shape[0]
    ):
        raise ValueError(
            f"attention_mask must be (batch, length) with batch {shape[0]}, got "
            f"{tuple(attention_mask.shape)}"
        )
    return shape


class MegaModel(MegaPreTrainedModel):
    """Embeddings -> `num_hidden_layers` Mega blocks -> (final norm) -> (pooler).

    HF has no final norm; `config.final_norm=True` adds the original LRA encoder's."""

    def __init__(self, config: MegaConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embedding_layer = MegaEmbeddings(config)
        self.layers = nn.ModuleList(MegaBlock(config) for _ in range(config.num_hidden_layers))
        # the original LRA encoder normalises after the last block (pre-norm models); HF does not
        self.final_norm = SequenceNorm.from_config(config) if config.final_norm else None
        self.pooler = MegaPooler(config) if add_pooling_layer else None
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: list[AttentionState] | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions | tuple:
        if encoder_hidden_states is not None or encoder_attention_mask is not None:
            raise ValueError("cross-attention (encoder_hidden_states) is not supported")
        if output_attentions:
            raise ValueError(
                "output_attentions=True is not supported: attention weights are never materialised"
            )
        config = self.config
        batch, length = _check_inputs(
            self.embedding_layer.word_embeddings.num_embeddings,
            input_ids,
            inputs_embeds,
            attention_mask,
            token_type_ids,
        )
        return_dict = config.use_return_dict if return_dict is None else return_dict
        output_hidden_states = (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        if use_cache is None:  # HF's default, except that training builds no state unasked
            use_cache = config.use_cache and not self.training
        use_cache = use_cache and config.is_decoder
        if past_key_values is not None and not config.is_decoder:
            raise ValueError("past_key_values need a decoder (config.is_decoder=True)")
        if attention_mask is not None:
            attention_mask = attention_mask[:, -length:]  # HF passes the full mask when decoding

        x = self.embedding_layer(input_ids, token_type_ids, inputs_embeds)  # (B, L, H)
        x, states, hidden = run_blocks(
            self.layers,
            x,
            attention_mask,
            past_key_values,
            use_cache=use_cache,
            gradient_checkpointing=self.gradient_checkpointing and self.training,
            output_hidden_states=output_hidden_states,
        )
        if self.final_norm is not None:
            x = self.final_norm(x, None if attention_mask is None else attention_mask.bool())
            if hidden is not None:
                hidden[-1] = x
        pooled = self.pooler(x) if self.pooler is not None else None
        hidden = tuple(hidden) if hidden is not None else None
        if not return_dict:
            return (x, pooled, hidden, states, None, None)
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=x, pooler_output=pooled, past_key_values=states, hidden_states=hidden
        )


def _as_tuple(loss: torch.Tensor | None, *outputs: Any, base: Any) -> tuple:
    """HF's return_dict=False layout: (loss,) if any, the head's outputs, then MegaModel's tuple
    from index 2 on (hidden states, cache, attentions, cross-attentions; None where absent)."""
    head = ((loss,) if loss is not None else ()) + outputs
    return head + (base.hidden_states, base.past_key_values, None, None)


class MegaForCausalLM(MegaPreTrainedModel):
    """LM head (optional dense + tanh, then the vocabulary projection) on a causal Mega."""

    _tied_head = "lm_head"

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        if not config.is_decoder:
            warnings.warn(
                "MegaForCausalLM with is_decoder=False is not causal; set is_decoder=True and "
                "bidirectional=False for language modelling",
                stacklevel=2,
            )
        self.mega = MegaModel(config, add_pooling_layer=False)
        if config.add_lm_hidden_dense_layer:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.hidden_activation = nn.Tanh()
        else:
            self.dense = None
            self.hidden_activation = None
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: list[AttentionState] | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithCrossAttentions | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        if labels is not None:
            use_cache = False
        out = self.mega(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            inputs_embeds=inputs_embeds,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden = out.last_hidden_state
        if self.dense is not None:
            hidden = self.hidden_activation(self.dense(hidden))
        logits = self.lm_head(hidden)  # (B, L, V)
        loss = None
        if labels is not None:  # predict token t+1 from position t
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1)
            )
        if not return_dict:
            return _as_tuple(loss, logits, base=out)
        return CausalLMOutputWithCrossAttentions(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
        )

    @classmethod
    def can_generate(cls) -> bool:
        return True

    def generate(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Greedy or sampled continuation with the decoding state; see
        `mega_lra.hf.generation.generate` for the arguments (attention_mask, max_new_tokens,
        do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id, generator)."""
        from mega_lra.hf.generation import generate

        return generate(self, input_ids, **kwargs)


class MegaForMaskedLM(MegaPreTrainedModel):
    _tied_head = "mlm_head"

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        if config.is_decoder:
            warnings.warn(
                "MegaForMaskedLM with is_decoder=True attends causally; an MLM is bidirectional",
                stacklevel=2,
            )
        self.mega = MegaModel(config, add_pooling_layer=False)
        if config.add_lm_hidden_dense_layer:
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.hidden_activation = nn.Tanh()
        else:
            self.dense = None
            self.hidden_activation = None
        self.mlm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.dropout = nn.Dropout(config.dropout_prob)  # present in HF, unused there too
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        out = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds,
            output_hidden_states,
            output_attentions,
        )
        hidden = out.last_hidden_state
        if self.dense is not None:
            hidden = self.hidden_activation(self.dense(hidden))
        logits = self.mlm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1))
        if not return_dict:
            return _as_tuple(loss, logits, base=out)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class MegaClassificationHead(nn.Module):
    """First token -> dropout -> dense -> tanh -> dropout -> out_proj (as HF)."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        p = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if p is None else p)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(features[:, 0])
        x = self.dropout(torch.tanh(self.dense(x)))
        return self.out_proj(x)


def _classification_loss(
    config: MegaConfig, logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """HF's rule: regression for 1 label, single-label for integer labels, else multi-label."""
    problem = config.problem_type
    if problem is None:
        if config.num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        if config.num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise ConfigError(
        f"MegaConfig.problem_type={problem!r}: expected regression, "
        "single_label_classification or multi_label_classification"
    )


class MegaForSequenceClassification(MegaPreTrainedModel):
    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.classifier = MegaClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        out = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds,
            output_hidden_states,
            output_attentions,
        )
        logits = self.classifier(out.last_hidden_state)
        loss = None if labels is None else _classification_loss(self.config, logits, labels)
        if not return_dict:
            return _as_tuple(loss, logits, base=out)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class MegaForMultipleChoice(MegaPreTrainedModel):
    """Inputs (B, num_choices, L) -> pooled first token -> one score per choice (B, num_choices)."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.mega = MegaModel(config)  # with pooler, as HF
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MultipleChoiceModelOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref is None or ref.dim() < 3:
            raise ValueError(
                "MegaForMultipleChoice expects inputs of shape (batch, choices, length)"
            )
        num_choices = ref.size(1)

        def flat(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.reshape(-1, *t.shape[2:])

        out = self.mega(
            flat(input_ids),
            attention_mask=flat(attention_mask),
            token_type_ids=flat(token_type_ids),
            inputs_embeds=flat(inputs_embeds),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(out.pooler_output)).view(-1, num_choices)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        if not return_dict:
            return _as_tuple(loss, logits, base=out)
        return MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class MegaForTokenClassification(MegaPreTrainedModel):
    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        p = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if p is None else p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TokenClassifierOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        out = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds,
            output_hidden_states,
            output_attentions,
        )
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        if not return_dict:
            return _as_tuple(loss, logits, base=out)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class MegaForQuestionAnswering(MegaPreTrainedModel):
    def __init__(self, config: MegaConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mega = MegaModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput | tuple:
        return_dict = self.config.use_return_dict if return_dict is None else return_dict
        out = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            inputs_embeds,
            output_hidden_states,
            output_attentions,
        )
        logits = self.qa_outputs(out.last_hidden_state)  # (B, L, 2)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.size(1)  # positions outside the sequence are ignored
            start = start_positions.view(-1).clamp(0, ignored)
            end = end_positions.view(-1).clamp(0, ignored)
            loss = (
                F.cross_entropy(start_logits, start, ignore_index=ignored)
                + F.cross_entropy(end_logits, end, ignore_index=ignored)
            ) / 2
        if not return_dict:
            return _as_tuple(loss, start_logits, end_logits, base=out)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
        )
