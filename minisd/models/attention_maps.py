"""Looking inside cross-attention (chapters 04 and 07): which latent pixels read which text token.

Forward hooks on the UNet's `attn2` layers record softmax(q k^T / sqrt(d)); the model is not changed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from minisd.models.attention import Attention
from minisd.models.tokenizer import CLIPTokenizer


def attention_probs(
    attn: Attention, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The softmax(q k^T / sqrt(d)) weights of one Attention call, averaged over heads: [B, N, L]."""
    q = attn.to_q(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # [B, h, N, d]
    k = attn.to_k(context).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # [B, h, L, d]
    logits = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # [B, h, N, L]
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return logits.softmax(-1).mean(1)


@contextmanager
def recording_cross_attention(unet: nn.Module, side: int) -> Iterator[list[torch.Tensor]]:
    """Inside the `with`, every cross-attention layer working on a `side` x `side` grid appends its
    `attention_probs` [B, side*side, L] to the yielded list (with gradients, if they are on)."""
    maps = []

    def capture(module, args, output):
        x, context, *mask = args  # [B, HW, C], [B, L, cross_attention_dim], ([B, 1, 1, L])
        if x.shape[1] == side * side:
            maps.append(attention_probs(module, x, context, mask[0] if mask else None))

    handles = [m.attn2.register_forward_hook(capture) for m in unet.modules() if hasattr(m, "attn2")]
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def cross_attention_maps(
    unet: nn.Module,
    sample: torch.Tensor,
    timestep,
    encoder_hidden_states: torch.Tensor,
    side: int,
    encoder_attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Where each text token is read: the cross-attention softmax weights of one UNet call.

    Runs `unet(sample, timestep, encoder_hidden_states, encoder_attention_mask=...)` and averages, over
    heads and over every cross-attention layer working on a `side` x `side` grid,
    softmax(q k^T / sqrt(d)) -> [B, side, side, L] (hidden tokens get 0).
    """
    with recording_cross_attention(unet, side) as maps:
        unet(sample, timestep, encoder_hidden_states, encoder_attention_mask=encoder_attention_mask)
    if not maps:
        raise ValueError(f"no cross-attention layer works on a {side}x{side} grid for this sample size")
    return torch.stack(maps).mean(0).unflatten(1, (side, side))  # [B, side, side, L]


def word_tokens(tokenizer: CLIPTokenizer, caption: str) -> list[int]:
    """The token index of each word of the caption: its last token (which has read the whole word)."""
    # the start token is index 0, so a word whose last token is the n-th of the caption is at n
    return list(itertools.accumulate(len(tokenizer.encode(w)) - 2 for w in caption.split()))
