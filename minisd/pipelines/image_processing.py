"""Pictures in and out of the pipeline: tensors in [-1, 1] <-> PIL images and numpy arrays."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_pil(
    images: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)
) -> list[Image.Image]:
    """[B, 3, H, W] (or [3, H, W]) tensor in `value_range`, or [B, H, W, 3] array in [0, 1], to PIL images."""
    if isinstance(images, torch.Tensor):
        x = images.detach().float().cpu()
        x = x[None] if x.ndim == 3 else x
        lo, hi = value_range
        x = ((x - lo) / (hi - lo)).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # [B, H, W, C]
    else:
        x = np.asarray(images, dtype=np.float32)
        x = x[None] if x.ndim == 3 else x
    x = (x * 255).round().astype(np.uint8)
    return [Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a) for a in x]
