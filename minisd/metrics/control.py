"""Control adherence of a ControlNet in the shapes world (chapter 11).

A mask ControlNet promises "the objects go here": read the objects back from each generated picture
(`foreground_mask`) and compare with the condition's mask by intersection over union (IoU, 1 =
exactly there, 0 = nowhere near). The same pictures are graded against their captions too, since a
condition must not cost the text its say: colour and shape of the first object named, with the
ControlNet and without it (the base model, at the same seeds).
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from minisd.shapes import (
    TINY_SAMPLING,
    ShapeScene,
    condition_image,
    foreground_mask,
    free_layout,
    object_mask,
    random_scene,
    score_image,
)


def mask_iou(predicted: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(predicted, target).sum()
    return float(np.logical_and(predicted, target).sum() / union) if union else 1.0


def heldout_layouts(num_scenes: int = 64, seed: int = 1) -> list[ShapeScene]:
    """Test scenes: held-out colour-shape pairs, single objects in free layouts, from their own seed."""
    rng = random.Random(10_007 * seed + 5)
    return [free_layout(random_scene(rng, held_out=True), rng) for _ in range(num_scenes)]


def _pixels(images: np.ndarray) -> np.ndarray:
    return (np.asarray(images) * 255).round().astype(np.uint8)


@torch.inference_mode()
def control_adherence(
    pipe,
    scenes: list[ShapeScene] | None = None,
    kind: str = "mask",
    seed: int = 0,
    batch_size: int = 32,
    **call,
) -> dict:
    """IoU of the read-back objects with the condition mask, and colour / shape adherence, for `pipe`
    (a StableDiffusionControlNetPipeline) with its ControlNet (scale 1) and without it (scale 0: the
    base model exactly), on `scenes` (default `heldout_layouts()`). Seconds per picture of each."""
    scenes = scenes if scenes is not None else heldout_layouts()
    args = dict(num_inference_steps=TINY_SAMPLING["steps"], guidance_scale=TINY_SAMPLING["guidance"])
    args.update(scheduler=TINY_SAMPLING["scheduler"], output_type="np", progress=False, **call)
    report = {}
    for name, scale in (("controlnet", 1.0), ("base", 0.0)):
        images, start = [], time.time()
        for i in range(0, len(scenes), batch_size):
            part = scenes[i : i + batch_size]
            generator = torch.Generator().manual_seed(seed + i)
            images.append(
                pipe([s.caption for s in part], image=torch.stack([condition_image(s, kind) for s in part]),
                     controlnet_conditioning_scale=scale, generator=generator, **args).images
            )  # fmt: skip
        pictures = _pixels(np.concatenate(images))
        scores = [score_image(p, s) for p, s in zip(pictures, scenes, strict=True)]
        report[name] = {
            "iou": float(
                np.mean(
                    [
                        mask_iou(foreground_mask(p), object_mask(s))
                        for p, s in zip(pictures, scenes, strict=True)
                    ]
                )
            ),
            "color": float(np.mean([s["color"] for s in scores])),
            "shape": float(np.mean([s["shape"] for s in scores])),
            "seconds_per_image": (time.time() - start) / len(scenes),
        }
    return report
