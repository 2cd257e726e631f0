"""CLIP's text encoder (ViT-L/14's text tower), built in chapter 02.

Token ids [B, 77] become 77 vectors of 768 numbers through token + position embeddings and 12
pre-LayerNorm transformer layers with causal self-attention. Stable Diffusion feeds the last
layer (or, with `clip_skip`, an earlier one) after the final LayerNorm to the UNet's
cross-attention. Attribute names equal transformers' keys (`text_model.encoder.layers.0...`), so
the official `text_encoder/model.safetensors` loads as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minisd.models.attention import multi_head_attention
from minisd.models.modeling_utils import ModelMixin


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's sigmoid approximation of GELU: x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": quick_gelu, "gelu": F.gelu}  # v1.x uses quick_gelu; SD 2.x's OpenCLIP gelu


class CLIPTextEmbeddings(nn.Module):
    """Token embedding plus a learned position embedding for each of the (up to) 77 places."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, hidden_size)
        self.position_embedding = nn.Embedding(max_position_embeddings, hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # [N]
        return self.token_embedding(input_ids) + self.position_embedding(positions)  # [B, N, D]


class CLIPAttention(nn.Module):
    """Causal multi-head self-attention: token i sees tokens 0..i only."""

    def __init__(self, hidden_size: int, num_attention_heads: int):
        super().__init__()
        self.heads = num_attention_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # [B, N, D]
        return self.out_proj(multi_head_attention(q, k, v, self.heads, causal=True))

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))  # [B, N, D]


class CLIPEncoder(nn.Module):
    """The stack of encoder layers (12 for v1.x)."""

    def __init__(self, num_hidden_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(**layer_kwargs) for _ in range(num_hidden_layers)])


class CLIPTextTransformer(nn.Module):
    """Embeddings -> encoder layers -> final LayerNorm."""

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

    def forward(self, input_ids: torch.Tensor, clip_skip: int = 0) -> torch.Tensor:
        x = self.embeddings(input_ids)  # [B, N, D]
        for layer in self.encoder.layers[: len(self.encoder.layers) - clip_skip]:
            x = layer(x)
        return self.final_layer_norm(x)  # [B, N, D]


class CLIPTextModel(ModelMixin):
    """The SD v1.x text encoder: `model(input_ids [B, 77]) -> [B, 77, 768]` (123,060,480 parameters).

    `clip_skip=k` stops k layers before the last and applies the final LayerNorm there, as
    diffusers does: `clip_skip=1` is the penultimate layer (A1111's "CLIP skip 2").
    """

    weights_name = "model"  # transformers writes model.safetensors

    def __init__(
        self,
        vocab_size: int = 49408,
        hidden_size: int = 768,
        intermediate_size: int = 3072,
        num_attention_heads: int = 12,
        num_hidden_layers: int = 12,
        max_position_embeddings: int = 77,
        layer_norm_eps: float = 1e-5,
        hidden_act: str = "quick_gelu",
    ):
        super().__init__()
        if hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
            )
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

    def forward(self, input_ids: torch.Tensor, clip_skip: int = 0) -> torch.Tensor:
        """Token ids [B, N] -> final-LayerNormed hidden states [B, N, hidden_size]."""
        layers = len(self.text_model.encoder.layers)
        if not 0 <= clip_skip < layers:
            raise ValueError(
                f"clip_skip must be in 0..{layers - 1} (0 = last layer, 1 = penultimate), got {clip_skip}"
            )
        self._check_input(input_ids)
        return self.text_model(input_ids, clip_skip)

    def hidden_states(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """The embeddings and each layer's output, before the final LayerNorm: layers + 1 of [B, N, D]."""
        self._check_input(input_ids)
        states = [self.text_model.embeddings(input_ids)]
        for layer in self.text_model.encoder.layers:
            states.append(layer(states[-1]))
        return states
