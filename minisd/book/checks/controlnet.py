"""Checkers for the exercises of chapter 11 (ControlNet): Sobel gradients, the guidance window, the size
of a ControlNet, and the IoU that measures control."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from minisd.book.checks.compare import compare_cases

# Chapter 11: ControlNet ---------------------------------------------------------------------------


def sobel_gradients(candidate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Chapter 11: `candidate(x [B, 1, H, W]) -> (gx, gy)`, the Sobel derivatives along x (columns, to
    the right) and y (rows, downwards), the border mirrored without repeating the edge pixel."""
    from minisd.pipelines.canny import sobel

    gen = torch.Generator().manual_seed(0)
    ramp = torch.arange(12.0).repeat(9, 1)[None, None]  # grows to the right: gx = 8 inside, gy = 0
    cases = [
        ("random 1x1x10x13", (torch.rand(1, 1, 10, 13, generator=gen) * 255,)),
        ("a batch of 3", (torch.rand(3, 1, 7, 7, generator=gen),)),
        ("a ramp to the right", (ramp,)),
        ("the ramp turned downwards", (ramp.transpose(-1, -2).contiguous(),)),
    ]
    return compare_cases(
        "sobel_gradients", lambda x: torch.stack(candidate(x)), lambda x: torch.stack(sobel(x)), cases
    )


def guidance_window(candidate: Callable[[int, float, float], list[bool]]) -> bool:
    """Chapter 11: `candidate(num_steps, control_guidance_start, control_guidance_end) -> [bool]`, for
    each denoising step i whether the ControlNet's residuals are added, as
    StableDiffusionControlNetPipeline decides (a step is kept when it lies wholly inside the window)."""

    def reference(num_steps: int, start: float, end: float) -> list[bool]:
        return [not (i / num_steps < start or (i + 1) / num_steps > end) for i in range(num_steps)]

    cases = [
        (f"{n} steps, window [{s}, {e}]", (n, s, e))
        for n, s, e in [
            (10, 0.0, 1.0),
            (10, 0.0, 0.5),
            (10, 0.3, 1.0),
            (25, 0.2, 0.7),
            (8, 0.1, 0.9),
            (20, 0.0, 0.04),
        ]
    ]
    return compare_cases("guidance_window", lambda *a: [bool(k) for k in candidate(*a)], reference, cases)


def controlnet_param_count(candidate: Callable[[dict, tuple[int, ...]], int]) -> bool:
    """Chapter 11: `candidate(unet_config, conditioning_embedding_out_channels) -> int`, the parameters of
    `ControlNetModel.from_unet(UNet2DConditionModel.from_config(unet_config), conditioning_embedding_
    out_channels=...)` (3 condition channels), computed from the config without building it."""
    from minisd.models.controlnet import ControlNetModel
    from minisd.models.unet import UNet2DConditionModel
    from minisd.shapes import TINY_CONFIGS

    def reference(config: dict, embedding: tuple[int, ...]) -> int:
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(config)
            net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding)
        return sum(p.numel() for p in net.parameters())

    tiny = TINY_CONFIGS["unet"]
    cases = [
        ("the tiny shapes UNet, embedding (16, 32, 32)", (tiny, (16, 32, 32))),
        ("the tiny UNet, embedding (8, 16, 32)", (tiny, (8, 16, 32))),
        ("two layers per block", ({**tiny, "layers_per_block": 2}, (16, 32, 32))),
        ("wider: [64, 128, 128]", ({**tiny, "block_out_channels": [64, 128, 128]}, (16, 32, 96, 256))),
    ]
    return compare_cases("controlnet_param_count", lambda *a: int(candidate(*a)), reference, cases)


def mask_iou(candidate: Callable[[np.ndarray, np.ndarray], float]) -> bool:
    """Chapter 11: `candidate(predicted, target) -> float`, intersection over union of two boolean
    [H, W] masks; 1.0 when both are empty (nothing asked, nothing drawn)."""
    from minisd.metrics.control import mask_iou as reference

    rng = np.random.default_rng(0)
    square = np.zeros((16, 16), bool)
    square[4:12, 4:12] = True
    shifted = np.roll(square, 4, axis=1)
    empty = np.zeros_like(square)
    cases = [
        ("equal masks", (square, square)),
        ("shifted by half its side", (square, shifted)),
        ("prediction inside the target", (square[::-1, ::-1] & (np.arange(16) < 8), square)),
        ("target inside the prediction", (square, square & (np.arange(16) < 8))),
        ("disjoint", (square, np.roll(square, 8, axis=0) & np.roll(square, 8, axis=1))),
        ("nothing drawn", (empty, square)),
        ("both empty", (empty, empty)),
        ("random", (rng.random((16, 16)) < 0.5, rng.random((16, 16)) < 0.3)),
    ]
    return compare_cases(
        "mask_iou", lambda *a: round(float(candidate(*a)), 6), lambda *a: round(reference(*a), 6), cases
    )
