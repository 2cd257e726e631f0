"""Measuring image-to-image and inpainting on the shapes world (chapter 10).

Image-to-image: recolour one object ("a red circle on a blue background" -> "a green circle on a
blue background") at several strengths; the shapes reader says whether the new colour came out
(adherence) and the object's pixels say how much of the layout survived (IoU with the input's object).
Inpainting: replace an object by one of a held-out colour-shape pair, repainting only a box around it;
the PSNR outside the box says whether the rest stayed, the reader whether the new object came, and
`seam` whether the repainted region joins its surroundings.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from minisd.shapes import COLORS, HELD_OUT, PALETTE, Shape, ShapeScene, render_scene, score_image, shape_mask

SIZE = 32  # the tiny model's pictures


def _single(rng: random.Random, color: str, shape: str, background: str) -> ShapeScene:
    size, cx, cy = rng.uniform(0.4, 0.55), rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    return ShapeScene(background, (Shape(color, shape, cx, cy, size),))


def recolour_tasks(n: int, seed: int = 0) -> list[tuple[ShapeScene, ShapeScene]]:
    """`n` (input scene, target scene) pairs: one object on a background; the target names the same
    object in another colour (neither the input's nor the background's), same place and size."""
    rng, tasks = random.Random(seed), []
    for _ in range(n):
        background = rng.choice(list(COLORS))
        color, new = rng.sample([c for c in COLORS if c != background], 2)
        source = _single(rng, color, rng.choice(["circle", "square"]), background)
        obj = dataclasses.replace(source.shapes[0], color=new)
        tasks.append((source, dataclasses.replace(source, shapes=(obj,))))
    return tasks


def _box(mask: np.ndarray, margin: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the bounding box of a boolean mask grown by `margin` pixels, inside the picture."""
    ys, xs = np.nonzero(mask)
    n = mask.shape[0]
    return (
        max(0, ys.min() - margin),
        min(n, ys.max() + margin + 1),
        max(0, xs.min() - margin),
        min(n, xs.max() + margin + 1),
    )


def inpaint_tasks(
    n: int, seed: int = 0, kind: str = "replace", margin: int = 3
) -> list[tuple[ShapeScene, ShapeScene, np.ndarray]]:
    """`n` (input scene, target scene, mask [32, 32] of 0/1) triples on held-out colour-shape pairs.

    "replace": the input's object is to become an object of a held-out pair (never seen in training);
    the mask is the old object's box grown by `margin` pixels. "complete": the input shows an object
    of a held-out pair and the mask covers one half of it (left, right, top or bottom, grown by
    `margin` outwards); the target is the input, so the kept half says what to draw.
    """
    if kind not in ("replace", "complete"):
        raise ValueError(f"kind must be 'replace' or 'complete', got {kind!r}")
    rng, tasks, pairs = random.Random(seed), [], sorted(HELD_OUT)
    for _ in range(n):
        color, shape = rng.choice(pairs)
        background = rng.choice([c for c in COLORS if c != color])
        if kind == "replace":
            old = rng.choice([c for c in COLORS if c not in (background, color)])
            source = _single(rng, old, rng.choice(["circle", "square", "triangle"]), background)
            target = dataclasses.replace(
                source, shapes=(dataclasses.replace(source.shapes[0], color=color, shape=shape),)
            )
        else:
            source = target = _single(rng, color, shape, background)
        y0, y1, x0, x1 = _box(shape_mask(source.shapes[0], SIZE), margin)
        if kind == "complete":
            cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
            y0, y1, x0, x1 = rng.choice(
                [(y0, y1, x0, cx), (y0, y1, cx, x1), (y0, cy, x0, x1), (cy, y1, x0, x1)]
            )
        mask = np.zeros((SIZE, SIZE), np.float32)
        mask[y0:y1, x0:x1] = 1
        tasks.append((source, target, mask))
    return tasks


def object_mask(image: np.ndarray) -> np.ndarray:
    """Boolean [H, W]: the pixels of a uint8 [H, W, 3] picture whose nearest palette colour is not the
    picture's most common one (its background)."""
    palette = np.array(list(PALETTE.values()), np.float32)  # [K, 3]
    nearest = ((image[:, :, None].astype(np.float32) - palette) ** 2).sum(-1).argmin(-1)  # [H, W]
    return nearest != np.bincount(nearest.ravel()).argmax()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def masked_psnr(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> float:
    """PSNR (dB, peak 255) of uint8 pictures [H, W, 3] over the pixels where `keep` [H, W] is true."""
    diff = a[keep].astype(np.float64) - b[keep].astype(np.float64)
    mse = float((diff**2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def _edges(picture: np.ndarray) -> np.ndarray:
    """Float [H, W]: each pixel's largest colour jump (RGB distance) to a 4-neighbour."""
    edges = np.zeros(picture.shape[:2])
    for axis in (0, 1):
        jump = np.linalg.norm(np.diff(picture, axis=axis), axis=-1)  # between pixels i and i + 1
        lo, hi = [(0, 0), (0, 0)], [(0, 0), (0, 0)]
        lo[axis], hi[axis] = (0, 1), (1, 0)
        edges = np.maximum(edges, np.maximum(np.pad(jump, lo), np.pad(jump, hi)))
    return edges


def _grow(values: np.ndarray, radius: int) -> np.ndarray:
    """The largest value within `radius` pixels (a square window) of each pixel of [H, W]."""
    padded, (h, w) = np.pad(values, radius), values.shape
    windows = [
        padded[dy : dy + h, dx : dx + w] for dy in range(2 * radius + 1) for dx in range(2 * radius + 1)
    ]
    return np.max(windows, axis=0)


def seam(image: np.ndarray, target: np.ndarray, mask: np.ndarray, tolerance: int = 2) -> float:
    """The edges that `image` has along the border of `mask` [H, W] and `target` has not (uint8
    [H, W, 3]): the mean, over the pairs of neighbouring pixels on the two sides of the border, of the
    colour jump (RGB distance, 0-255) in `image` minus the largest jump in `target` within `tolerance`
    pixels of the pair, counted when positive. An object drawn a pixel or two off is forgiven; a
    region that does not continue its surroundings (a seam) leaves about its colour distance."""
    m = mask > 0.5
    img = image.astype(np.float64)
    allowed = _grow(_edges(target.astype(np.float64)), tolerance)  # [H, W]
    excess = []
    for axis in (0, 1):
        across = np.diff(m, axis=axis)  # the pairs (i, i + 1) on the two sides of the border
        jump = np.linalg.norm(np.diff(img, axis=axis), axis=-1)
        near, far = (np.take(allowed, range(a, allowed.shape[axis] - 1 + a), axis=axis) for a in (0, 1))
        excess.append(np.maximum(jump - np.maximum(near, far), 0)[across])
    pairs = np.concatenate(excess)
    return float(pairs.mean()) if pairs.size else 0.0


def _uint8(images: np.ndarray) -> np.ndarray:
    return (np.asarray(images) * 255).round().astype(np.uint8)


@torch.inference_mode()
def recolour_sweep(
    pipe,
    strengths: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
    num_tasks: int = 32,
    num_inference_steps: int = 20,
    guidance_scale: float = 3.0,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Image-to-image recolouring with an `StableDiffusionImg2ImgPipeline` over `strengths`: one row per
    strength with "adherence" (share of pictures showing the new colour), "iou" (mean IoU of the
    object's pixels with the input's) and "kept" (share with IoU >= 0.5)."""
    tasks = recolour_tasks(num_tasks, seed)
    pictures = [render_scene(source, SIZE) for source, _ in tasks]
    inputs = [object_mask(p) for p in pictures]
    rows = []
    for strength in tqdm(strengths, desc="strengths", disable=not progress):
        images = _uint8(
            pipe(
                [target.caption for _, target in tasks], image=[p / 255.0 for p in pictures],
                strength=strength, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                output_type="np", generator=torch.Generator().manual_seed(seed), progress=False,
            ).images
        )  # fmt: skip
        ious = [iou(object_mask(img), m) for img, m in zip(images, inputs, strict=True)]
        colour = [score_image(img, t)["color"] for img, (_, t) in zip(images, tasks, strict=True)]
        rows.append(
            {
                "strength": strength,
                "adherence": float(np.mean(colour)),
                "iou": float(np.mean(ious)),
                "kept": float(np.mean(np.array(ious) >= 0.5)),
            }
        )
    return rows


@torch.inference_mode()
def evaluate_inpainting(
    pipe,
    kind: str = "replace",
    num_tasks: int = 32,
    num_inference_steps: int = 20,
    guidance_scale: float = 3.0,
    seed: int = 0,
) -> dict:
    """Inpainting with a `StableDiffusionInpaintPipeline` (4 channels: blend; 9: an inpainting UNet) on
    `inpaint_tasks` of `kind`: "psnr" (mean dB outside the mask, against the input), "object" (share
    with the requested colour and shape, and one object only), "iou" (mean IoU of the object's pixels
    with the target's), "seam" (mean `seam` of the mask's border against the target scene; "seams" per
    task), and the pictures, inputs and masks."""
    tasks = inpaint_tasks(num_tasks, seed, kind)
    pictures = [render_scene(source, SIZE) for source, _, _ in tasks]
    images = _uint8(
        pipe(
            [target.caption for _, target, _ in tasks], image=[p / 255.0 for p in pictures],
            mask_image=[m[:, :, None] for _, _, m in tasks], num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, output_type="np", generator=torch.Generator().manual_seed(seed),
            progress=False,
        ).images
    )  # fmt: skip
    psnr = [masked_psnr(img, p, m < 0.5) for img, p, (_, _, m) in zip(images, pictures, tasks, strict=True)]
    scores = [score_image(img, target) for img, (_, target, _) in zip(images, tasks, strict=True)]
    ious = [
        iou(object_mask(img), shape_mask(t.shapes[0], SIZE))
        for img, (_, t, _) in zip(images, tasks, strict=True)
    ]
    targets = [render_scene(target, SIZE) for _, target, _ in tasks]
    seams = [seam(img, t, m) for img, t, (_, _, m) in zip(images, targets, tasks, strict=True)]
    return {
        "psnr": float(np.mean(psnr)),
        "object": float(np.mean([s["color"] and s["shape"] and s["count"] for s in scores])),
        "iou": float(np.mean(ious)),
        "seam": float(np.mean(seams)),
        "seams": np.array(seams),
        "images": images,
        "inputs": np.stack(pictures),
        "masks": np.stack([m for _, _, m in tasks]),
    }


def plot_tradeoff(rows: list[dict], ax=None):
    """Colour adherence and layout kept (IoU) against strength, on one axis; returns the axis."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(4.5, 3.2))[1]
    s = [r["strength"] for r in rows]
    ax.plot(s, [r["adherence"] for r in rows], "o-", label="new colour (adherence)")
    ax.plot(s, [r["iou"] for r in rows], "s-", label="layout kept (IoU with input)")
    ax.set(xlabel="strength", ylim=(0, 1.05), title="image-to-image: edit vs keep")
    ax.legend(loc="center left", fontsize=8)
    return ax
