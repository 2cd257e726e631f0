"""Attention, shared by the UNet (chapter 04), the VAE (chapter 05) and CLIP (chapter 02).

One multi-head attention on `torch.nn.functional.scaled_dot_product_attention`; the `Attention`
module carries the projections under diffusers' names (`to_q`, `to_k`, `to_v`, `to_out.0`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def multi_head_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    causal: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over `heads` heads. q: [B, N, h*d], k/v: [B, M, h*d] -> [B, N, h*d]."""
    b, n, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))  # [B, h, N, d]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    return out.transpose(1, 2).reshape(b, n, inner)  # [B, N, h*d]


# The GroupNorm before a Transformer2DModel's proj_in uses eps 1e-6 in SD's original code and in
# diffusers, unlike the UNet resnets' 1e-5 (`norm_eps`); it is not a config key.
TRANSFORMER_GROUP_NORM_EPS = 1e-6


class Attention(nn.Module):
    """Self-attention over tokens [B, N, query_dim]; cross-attention when `encoder_hidden_states` is given."""

    def __init__(
        self,
        query_dim: int,
        cross_attention_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        bias: bool = False,
    ):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(cross_attention_dim or query_dim, inner, bias=bias)
        self.to_v = nn.Linear(cross_attention_dim or query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def forward(
        self,
        x: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: [B, N, query_dim] -> [B, N, query_dim]. `attention_mask`: bool, broadcastable to
        [B, heads, N, M]; False hides a key (a padding token)."""
        context = x if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        return self.to_out[0](multi_head_attention(q, k, v, self.heads, mask=attention_mask))


class GEGLU(nn.Module):
    """A gated GELU unit: project to twice the width, then `hidden * gelu(gate)`.

    [..., dim_in] -> [..., dim_out].
    """

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)  # [..., dim_out] each
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    """The transformer MLP: GEGLU to `mult * dim`, dropout, Linear back to `dim` (keys `net.0`, `net.2`)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention to the text, feed-forward; each pre-LayerNorm with a residual.

    x: [B, N, dim], encoder_hidden_states: [B, L, cross_attention_dim] -> [B, N, dim];
    `encoder_attention_mask` (bool [B, 1, 1, L], optional) hides text tokens from the cross-attention.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, dim_head=dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, cross_attention_dim, heads=heads, dim_head=dim_head)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(
        self,
        x: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), encoder_hidden_states, encoder_attention_mask)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """A feature map as a sequence of H*W tokens through transformer blocks, with a residual.

    GroupNorm -> proj_in (1x1 conv in v1.x, Linear in 2.x) -> blocks -> proj_out -> + input.
    x: [B, C, H, W], encoder_hidden_states: [B, L, cross_attention_dim] -> [B, C, H, W].
    """

    def __init__(
        self,
        num_attention_heads: int,
        attention_head_dim: int,
        in_channels: int,
        cross_attention_dim: int,
        num_layers: int = 1,
        norm_num_groups: int = 32,
        use_linear_projection: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        inner = num_attention_heads * attention_head_dim
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=TRANSFORMER_GROUP_NORM_EPS)
        if use_linear_projection:
            self.proj_in = nn.Linear(in_channels, inner)
            self.proj_out = nn.Linear(inner, in_channels)
        else:
            self.proj_in = nn.Conv2d(in_channels, inner, 1)
            self.proj_out = nn.Conv2d(inner, in_channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner, num_attention_heads, attention_head_dim, cross_attention_dim, dropout
            )
            for _ in range(num_layers)
        )

    def forward(
        self,
        x: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, _, h, w = x.shape
        hidden = self.norm(x)
        if not self.use_linear_projection:
            hidden = self.proj_in(hidden)  # [B, inner, H, W]
        hidden = hidden.permute(0, 2, 3, 1).reshape(b, h * w, -1)  # [B, HW, C or inner]
        if self.use_linear_projection:
            hidden = self.proj_in(hidden)  # [B, HW, inner]
        for block in self.transformer_blocks:
            hidden = block(hidden, encoder_hidden_states, encoder_attention_mask)
        if self.use_linear_projection:
            hidden = self.proj_out(hidden)  # [B, HW, C]
        hidden = hidden.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()  # [B, C or inner, H, W]
        if not self.use_linear_projection:
            hidden = self.proj_out(hidden)  # [B, C, H, W]
        return hidden + x
