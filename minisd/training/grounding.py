"""A grounding loss for cross-attention (TokenCompose): each colour or shape word is read on its object."""

from __future__ import annotations

import numpy as np
import torch

from minisd.models.attention_maps import word_tokens
from minisd.models.tokenizer import CLIPTokenizer
from minisd.shapes import shape_coverage
from minisd.training.data import RenderedDataset


def grounding_targets(
    dataset: RenderedDataset, tokenizer: CLIPTokenizer, side: int, relation: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every scene, the token of each colour and shape word (0: none) [N, K] and how much the
    object(s) it names cover each cell of the side x side latent grid [N, K, side * side].

    K = 4; with `relation`, K = 6 and the relation word(s) are grounded on the first object.
    """
    k = 6 if relation else 4
    tokens = torch.zeros(len(dataset), k, dtype=torch.long)
    masks = torch.zeros(len(dataset), k, side * side)
    for i, scene in enumerate(dataset.scenes):
        positions = word_tokens(tokenizer, scene.caption)
        words = scene.object_words() + (scene.relation_words() if relation else [])
        for j, (word, shapes) in enumerate(words):
            tokens[i, j] = positions[word]
            cover = np.max([shape_coverage(scene.shapes[k], side) for k in shapes], axis=0)  # [side, side]
            masks[i, j] = torch.from_numpy(cover).flatten()
    return tokens, masks


def upsample_map(maps: torch.Tensor, side: int) -> torch.Tensor:
    """Cross-attention weights of a side x side grid [B, side*side, L] -> the 2x finer grid's
    [B, 4*side*side, L]: each cell's weights copied to its four children (each still sums to 1)."""
    grid = maps.unflatten(1, (side, side))  # [B, side, side, L]
    return grid.repeat_interleave(2, 1).repeat_interleave(2, 2).flatten(1, 2)


def grounding_loss(maps: torch.Tensor, tokens: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """TokenCompose's token loss: (1 - the share of a word's attention that falls on its object)^2.

    maps [B, HW, L] (cross-attention weights), tokens [B, K] (0: none), masks [B, K, HW] -> a scalar.
    """
    attention = maps.gather(2, tokens[:, None, :].expand(-1, maps.shape[1], -1)).transpose(1, 2)  # [B, K, HW]
    inside = (attention * masks).sum(-1) / attention.sum(-1).clamp_min(1e-8)  # [B, K]
    used = tokens > 0
    return ((1 - inside[used]) ** 2).mean() if used.any() else maps.new_zeros(())
