"""CLIP's text encoder (ViT-L/14's text tower), built in chapter 02.

Token ids [B, 77] become 77 vectors of 768 numbers through token + position embeddings and 12
pre-LayerNorm transformer layers with causal self-attention. Stable Diffusion feeds the last
layer (or, with `clip_skip`, an earlier one) after the final LayerNorm to the UNet's
cross-attention. Attribute names equal transformers' keys (`text_model.encoder.layers.0...`), so
the official `text_encoder/model.safetensors` loads as it is. As in transformers, the model returns
`BaseModelOutputWithPooling`: `text_encoder(ids)[0]` and `.last_hidden_state` are [B, 77, 768].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minisd.models.attention import multi_head_attention
from minisd.models.modeling_utils import ModelMixin, reject_unsupported


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's sigmoid approximation of GELU: x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}  # v1.x uses quick_gelu; SD 2.x's OpenCLIP gelu


class BaseModelOutputWithPooling(tuple):
    """transformers' output of a text encoder, read by name or by index.

    (last_hidden_state [B, N, D], pooler_output [B, D]), plus hidden_states (the embeddings and
    each layer's output, before the final LayerNorm) only when they were asked for, as transformers
    leaves out the fields it did not compute.
    """

    def __new__(
        cls,
        last_hidden_state: torch.Tensor,
        pooler_output: torch.Tensor,
        hidden_states: tuple[torch.Tensor, ...] | None = None,
    ):
        fields = (last_hidden_state, pooler_output)
        return super().__new__(cls, fields if hidden_states is None else (*fields, hidden_states))

    @property
    def last_hidden_state(self) -> torch.Tensor:
        return self[0]

    @property
    def pooler_output(self) -> torch.Tensor:
        return self[1]

    @property
    def hidden_states(self) -> tuple[torch.Tensor, ...] | None:
        return self[2] if len(self) > 2 else None


class CLIPTextEmbeddings(nn.Module):
    """Token embedding plus a learned position embedding for each of the (up to) 77 places."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, hidden_size)
        self.position_embedding = nn.Embedding(max_position_embeddings, hidden_size)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)  # [N]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)  # [B, N, D]


class CLIPAttention(nn.Module):
    """Causal multi-head self-attention: token i sees tokens 0..i only."""

    def __init__(self, hidden_size: int, num_attention_heads: int):
        super().__init__()
        self.heads = num_attention_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mask` (bool [B, 1, N, N], causal already) replaces the plain causal mask when given."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # [B, N, D]
        return self.out_proj(multi_head_attention(q, k, v, self.heads, causal=mask is None, mask=mask))

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights softmax(q k^T / sqrt(d) + causal mask): [B, heads, N, N] (for pictures)."""
        b, n, inner = x.shape
        d = inner // self.heads
        q = self.q_proj(x).view(b, n, self.heads, d).transpose(1, 2)  # [B, h, N, d]
        k = self.k_proj(x).view(b, n, self.heads, d).transpose(1, 2)  # [B, h, N, d]
        scores = q @ k.transpose(-1, -2) / d**0.5  # [B, h, N, N]
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)  # True above the diagonal
        return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


class CLIPMLP(nn.Module):
    """Position-wise feed-forward: hidden -> intermediate (x4) -> activation -> hidden."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.act = ACTIVATIONS[hidden_act]
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # [B, N, D]


class CLIPEncoderLayer(nn.Module):
    """Pre-LN transformer layer: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(
        self, hidden_size: int, intermediate_size: int, num_attention_heads: int, hidden_act: str, eps: float
    ):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(hidden_size, eps=eps)
        self.self_attn = CLIPAttention(hidden_size, num_attention_heads)
        self.layer_norm2 = nn.LayerNorm(hidden_size, eps=eps)
        self.mlp = CLIPMLP(hidden_size, intermediate_size, hidden_act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))  # [B, N, D]


class CLIPEncoder(nn.Module):
    """The stack of encoder layers (12 for v1.x)."""

    def __init__(self, num_hidden_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(**layer_kwargs) for _ in range(num_hidden_layers)])


class CLIPTextTransformer(nn.Module):
    """Embeddings -> encoder layers -> final LayerNorm (applied by the caller, see `CLIPTextModel`)."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        intermediate_size: int,
        num_attention_heads: int,
        num_hidden_layers: int,
        max_position_embeddings: int,
        layer_norm_eps: float,
        hidden_act: str,
    ):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(vocab_size, hidden_size, max_position_embeddings)
        self.encoder = CLIPEncoder(
            num_hidden_layers,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_attention_heads=num_attention_heads,
            hidden_act=hidden_act,
            eps=layer_norm_eps,
        )
        self.final_layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        clip_skip: int = 0,
    ) -> list[torch.Tensor]:
        """The embeddings and the output of each layer run (all but the last `clip_skip`): [B, N, D] each."""
        mask = None
        if attention_mask is not None:  # causal AND the key is not padding: [B, 1, N, N]
            n = input_ids.shape[1]
            causal = torch.ones(n, n, dtype=torch.bool, device=input_ids.device).tril()
            mask = causal & attention_mask.bool()[:, None, None, :]
        states = [self.embeddings(input_ids, position_ids)]
        for layer in self.encoder.layers[: len(self.encoder.layers) - clip_skip]:
            states.append(layer(states[-1], mask))
        return states


class CLIPTextModel(ModelMixin):
    """The SD v1.x text encoder: `model(input_ids [B, 77]).last_hidden_state` -> [B, 77, 768].

    Constructor keys and defaults are transformers' `CLIPTextConfig` (its defaults are the 512-wide
    CLIP ViT-B/32 tower; SD v1.x's config.json gives 768 wide, 12 heads: 123,060,480 parameters).
    `projection_dim`, `pad_token_id` and `bos_token_id` do not change this model (as in
    transformers); `eos_token_id` picks the pooled token. `clip_skip=k` (minisd's, after
    transformers' arguments) stops k layers before the last and applies the final LayerNorm there,
    as diffusers does: `clip_skip=1` is the penultimate layer (A1111's "CLIP skip 2").
    """

    weights_name = "model"  # transformers writes model.safetensors

    def __init__(
        self,
        vocab_size: int = 49408,
        hidden_size: int = 512,
        intermediate_size: int = 2048,
        projection_dim: int | None = 512,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 8,
        max_position_embeddings: int = 77,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        initializer_factor: float = 1.0,
        pad_token_id: int | None = 1,
        bos_token_id: int | None = 49406,
        eos_token_id: int | None = 49407,
    ):
        super().__init__()
        if hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
            )
        # minisd initialises with PyTorch's defaults (weights are meant to be loaded), not transformers'
        reject_unsupported(
            "CLIPTextModel",
            dict(
                attention_dropout=(attention_dropout, 0.0),
                initializer_range=(initializer_range, 0.02),
                initializer_factor=(initializer_factor, 1.0),
            ),
        )
        self.eos_token_id = eos_token_id
        self.text_model = CLIPTextTransformer(
            vocab_size,
            hidden_size,
            intermediate_size,
            num_attention_heads,
            num_hidden_layers,
            max_position_embeddings,
            layer_norm_eps,
            hidden_act,
        )

    @classmethod
    def convert_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept transformers-5 keys (no `text_model.` prefix) and drop the `position_ids` buffer."""
        bare = ("embeddings.", "encoder.", "final_layer_norm.")  # transformers 5 drops `text_model.`
        return {
            (f"text_model.{k}" if k.startswith(bare) else k): v
            for k, v in state_dict.items()
            if not k.endswith("position_ids")
        }

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        """Grow (or shrink) the token embedding table to `new_num_tokens` rows, keeping the rows both
        share; new rows start as the mean of the old ones (as transformers). Returns the new table."""
        old = self.text_model.embeddings.token_embedding
        new = nn.Embedding(
            new_num_tokens, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype
        )
        with torch.no_grad():
            n = min(new_num_tokens, old.num_embeddings)
            new.weight[:n] = old.weight[:n]
            new.weight[n:] = old.weight.mean(0)
        self.text_model.embeddings.token_embedding = new
        self.config["vocab_size"] = new_num_tokens
        return new

    def _check_input(self, input_ids: torch.Tensor) -> None:
        longest = self.text_model.embeddings.position_embedding.num_embeddings
        vocab = self.text_model.embeddings.token_embedding.num_embeddings
        if input_ids.ndim != 2 or input_ids.dtype not in (torch.long, torch.int):
            raise ValueError(
                f"input_ids must be an integer tensor [batch, tokens], got {input_ids.dtype} "
                f"{tuple(input_ids.shape)}; use the tokenizer's output, or ids.unsqueeze(0) for one prompt"
            )
        if input_ids.shape[1] > longest:
            raise ValueError(
                f"input_ids has {input_ids.shape[1]} tokens but the model has only {longest} positions "
                f"(max_position_embeddings); truncate the prompt to {longest} tokens (the tokenizer does)"
            )
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab):
            raise ValueError(
                f"input_ids must lie in [0, {vocab}) (vocab_size), got values from {input_ids.min().item()} "
                f"to {input_ids.max().item()}; were they made by a different tokenizer?"
            )

    def pool(self, last_hidden_state: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The hidden state at each prompt's end-of-text token: [B, N, D] -> [B, D].

        Configs with the stale eos_token_id 2 (SD v1.x's) take the largest id, which is EOT
        (49407), as transformers does; others the first `eos_token_id`.
        """
        if self.eos_token_id == 2:
            where = input_ids.argmax(dim=-1)
        else:
            where = (input_ids == self.eos_token_id).int().argmax(dim=-1)
        return last_hidden_state[torch.arange(input_ids.shape[0], device=input_ids.device), where]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        clip_skip: int = 0,
    ) -> BaseModelOutputWithPooling | tuple:
        """Token ids [B, N] -> `BaseModelOutputWithPooling(last_hidden_state, pooler_output)`.

        last_hidden_state: [B, N, D] after the final LayerNorm; pooler_output: [B, D] at EOT.

        `attention_mask` [B, N] (1: a token, 0: padding) hides padding keys as transformers does;
        `output_hidden_states=True` adds the embeddings and each layer's output; `return_dict=False`
        gives a plain tuple of the same fields.
        """
        if input_ids is None:
            raise ValueError("input_ids is required: the token ids [batch, tokens] from the tokenizer")
        if output_attentions:
            raise NotImplementedError(
                "output_attentions=True: minisd's attention does not return its weights; "
                "use text_model.encoder.layers[i].self_attn.attention_probs(x)"
            )
        layers = len(self.text_model.encoder.layers)
        if not 0 <= clip_skip < layers:
            raise ValueError(
                f"clip_skip must be in 0..{layers - 1} (0 = last layer, 1 = penultimate), got {clip_skip}"
            )
        self._check_input(input_ids)
        states = self.text_model(input_ids, attention_mask, position_ids, clip_skip)  # [B, N, D] each
        last = self.text_model.final_layer_norm(states[-1])  # [B, N, D]
        out = BaseModelOutputWithPooling(
            last, self.pool(last, input_ids), tuple(states) if output_hidden_states else None
        )
        return out if return_dict is not False else tuple(out)
