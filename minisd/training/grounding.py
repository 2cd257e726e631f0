"""A grounding loss for cross-attention (TokenCompose): each colour or shape word is read on its object."""

from __future__ import annotations

import numpy as np
import torch

from minisd.models.attention_maps import word_tokens
from minisd.models.tokenizer import CLIPTokenizer
from minisd.shapes import shape_coverage
from minisd.training.data import RenderedDataset


def grounding_targets(
    dataset: RenderedDataset, tokenizer: CLIPTokenizer, side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every scene, the token of each colour and shape word (0: none) [N, 4] and how much the
    object(s) it names cover each cell of the side x side latent grid [N, 4, side * side]."""
    tokens = torch.zeros(len(dataset), 4, dtype=torch.long)
    masks = torch.zeros(len(dataset), 4, side * side)
    for i, scene in enumerate(dataset.scenes):
        positions = word_tokens(tokenizer, scene.caption)
        for j, (word, shapes) in enumerate(scene.object_words()):
            tokens[i, j] = positions[word]
            cover = np.max([shape_coverage(scene.shapes[k], side) for k in shapes], axis=0)  # [side, side]
            masks[i, j] = torch.from_numpy(cover).flatten()
    return tokens, masks


def grounding_loss(maps: torch.Tensor, tokens: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """TokenCompose's token loss: (1 - the share of a word's attention that falls on its object)^2.

    maps [B, HW, L] (cross-attention weights), tokens [B, K] (0: none), masks [B, K, HW] -> a scalar.
    """
    attention = maps.gather(2, tokens[:, None, :].expand(-1, maps.shape[1], -1)).transpose(1, 2)  # [B, K, HW]
    inside = (attention * masks).sum(-1) / attention.sum(-1).clamp_min(1e-8)  # [B, K]
    used = tokens > 0
    return ((1 - inside[used]) ** 2).mean() if used.any() else maps.new_zeros(())
