"""Condition images of the shapes world, for a ControlNet (chapter 11): where the objects are.

A scene knows its objects exactly, so its conditions need no detector: the object mask (white where
any object is) and the outline (the mask's border pixels). `free_layout` moves a single object
anywhere in the picture at any size, so that a ControlNet trained on it learns "here and this big"
for layouts the text-to-image model never drew.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from minisd.shapes.scenes import Shape, ShapeScene, shape_coverage

CONDITIONS = ("mask", "outline")


def object_mask(scene: ShapeScene, size: int = 32) -> np.ndarray:
    """Boolean [size, size]: the pixels at least half covered by some object of the scene."""
    return np.any([shape_coverage(s, size) >= 0.5 for s in scene.shapes], axis=0)


def outline(scene: ShapeScene, size: int = 32) -> np.ndarray:
    """Boolean [size, size]: the object mask's pixels with a 4-neighbour outside it (a 1-pixel border)."""
    mask = object_mask(scene, size)
    padded = np.pad(mask, 1)
    inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inside


def condition_image(scene: ShapeScene, kind: str = "mask", size: int = 32) -> torch.Tensor:
    """The condition a ControlNet reads: float [3, size, size] in {0, 1} (white on black)."""
    if kind not in CONDITIONS:
        raise ValueError(f"kind must be one of {CONDITIONS}, got {kind!r}")
    drawn = object_mask(scene, size) if kind == "mask" else outline(scene, size)
    return torch.from_numpy(drawn).float().expand(3, -1, -1).clone()


def free_layout(scene: ShapeScene, rng: random.Random) -> ShapeScene:
    """A single-object scene with its object moved anywhere and resized (a quarter to 0.6 of the side,
    fully inside the picture); two-object scenes, whose captions say where each goes, are unchanged."""
    if len(scene.shapes) != 1:
        return scene
    s = scene.shapes[0]
    size = rng.uniform(0.25, 0.6)
    cx, cy = (rng.uniform(size / 2, 1 - size / 2) for _ in range(2))
    return ShapeScene(scene.background, (Shape(s.color, s.shape, cx, cy, size),))
