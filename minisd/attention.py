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


class Attention(nn.Module):
    """Self-attention, or cross-attention when `encoder_hidden_states` is given.

    On a 4-D input [B, C, H, W] (the VAE's mid-block) it normalises with `group_norm`,
    attends over the H*W positions and adds the input back (a residual connection).
    """

    def __init__(
        self,
        query_dim: int,
        cross_attention_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        bias: bool = False,
        norm_num_groups: int | None = None,
        eps: float = 1e-5,
    ):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.group_norm = nn.GroupNorm(norm_num_groups, query_dim, eps=eps) if norm_num_groups else None
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(cross_attention_dim or query_dim, inner, bias=bias)
        self.to_v = nn.Linear(cross_attention_dim or query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim == 4:  # [B, C, H, W]: spatial self-attention with a residual
            b, c, h, w = x.shape
            tokens = self.group_norm(x).view(b, c, h * w).transpose(1, 2)  # [B, HW, C]
            return x + self.forward(tokens).transpose(1, 2).reshape(b, c, h, w)
        context = x if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        return self.to_out[0](multi_head_attention(q, k, v, self.heads))
