"""CLIP score: how well pictures agree with their prompts under a CLIP model.

For each (picture, prompt) pair, the cosine of CLIP's projected image and text features, times 100
and clipped at 0; the score of a set is the mean (the definition of Hessel et al.'s CLIPScore with
w = 100, and of torchmetrics' CLIPScore). Higher means closer agreement; it says nothing about
fidelity or diversity, which is why papers plot it against FID.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

# The pixel mean and std CLIP's image processors normalise with (OpenAI's training statistics).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(
    images: torch.Tensor,
    size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """Pictures [B, 3, H, W] in [0, 1] -> CLIP's pixel_values [B, 3, size, size].

    As CLIP's image processor: the shorter side resized to `size` (bicubic, antialiased; skipped
    when it already is), a centre crop, then normalisation with `mean` and `std`.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [batch, 3, height, width] in [0, 1], got {tuple(images.shape)}")
    x = images.float()
    h, w = x.shape[-2:]
    if min(h, w) != size:
        scale = size / min(h, w)
        x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bicubic", antialias=True)
        h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    x = x[..., top : top + size, left : left + size]  # [B, 3, size, size]
    mean_, std_ = (torch.tensor(v, dtype=x.dtype, device=x.device)[:, None, None] for v in (mean, std))
    return (x - mean_) / std_


@torch.no_grad()
def clip_similarities(
    images: torch.Tensor | Sequence,
    prompts: Sequence[str],
    clip_model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    preprocess: Callable[[torch.Tensor | Sequence], torch.Tensor],
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """Cosine of each picture with its own prompt: [N].

    `clip_model` has `get_image_features` / `get_text_features` (minisd's or transformers'
    `CLIPModel`); `tokenizer(prompts)` gives input ids [b, 77]; `preprocess(images)` gives
    pixel_values [b, 3, S, S] for a slice of `images` (e.g. `lambda x: clip_preprocess(x, 224)`).
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} pictures but {len(prompts)} prompts: give one prompt per picture")
    if not len(prompts):
        raise ValueError("no pictures to score")
    device = next(clip_model.parameters()).device
    cosines = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="CLIP score", disable=not progress):
        pixels = preprocess(images[start : start + batch_size]).to(device)
        ids = tokenizer(list(prompts[start : start + batch_size])).to(device)
        image = clip_model.get_image_features(pixel_values=pixels).pooler_output  # [b, P]
        text = clip_model.get_text_features(input_ids=ids).pooler_output  # [b, P]
        cosines.append(F.cosine_similarity(image.float(), text.float(), dim=-1).cpu())
    return torch.cat(cosines)


def clip_score(
    images: torch.Tensor | Sequence,
    prompts: Sequence[str],
    clip_model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    preprocess: Callable[[torch.Tensor | Sequence], torch.Tensor],
    batch_size: int = 64,
    progress: bool = False,
) -> float:
    """100 * max(cos(image, prompt), 0), averaged over the pairs (see `clip_similarities`)."""
    cosines = clip_similarities(images, prompts, clip_model, tokenizer, preprocess, batch_size, progress)
    return float((100 * cosines).clamp(min=0).mean())


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..N of the values, tied values sharing the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    shared = first + (counts + 1) / 2  # the mean of ranks first + 1 .. first + count
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(shared, counts)
    return ranks


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation: the Pearson correlation of the two lists' average ranks (ties, as
    a reader's "2 of 4 right", are common); 1 when b orders the items exactly as a does."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two lists of one length >= 2, got {len(a)} and {len(b)}")
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])
