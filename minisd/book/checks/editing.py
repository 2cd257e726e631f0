"""Checkers for the exercises of chapter 10 (image-to-image and inpainting)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from minisd.book.checks.compare import compare_cases

# Chapter 10: image-to-image and inpainting -------------------------------------------------------


def strength_steps(candidate: Callable[[list[int], float], list[int]]) -> bool:
    """Chapter 10: `candidate(timesteps, strength) -> the timesteps an image-to-image run takes`, given
    the whole n-step schedule (noisiest first), as `minisd.pipelines.strength_timesteps` picks them."""
    from minisd.pipelines.img2img import strength_timesteps
    from minisd.schedulers import DDIMScheduler

    def reference(timesteps: list[int], strength: float) -> list[int]:
        scheduler = DDIMScheduler(steps_offset=1)
        scheduler.timesteps = torch.tensor(timesteps)
        return strength_timesteps(scheduler, len(timesteps), strength).tolist()

    def schedule(n: int) -> list[int]:
        return list(range(1000 - 1000 // n + 1, 0, -(1000 // n)))  # "leading" spacing, steps_offset 1

    cases = [(f"{n} steps, strength {s}", (schedule(n), s))
             for n, s in [(50, 0.75), (50, 0.3), (50, 1.0), (50, 0.0), (25, 0.5), (20, 0.33), (10, 0.19),
                          (10, 0.99), (7, 0.5), (3, 0.34)]]  # fmt: skip
    return compare_cases("strength_steps", lambda t, s: list(candidate(t, s)), reference, cases)


def latent_mask(candidate: Callable[[torch.Tensor, int], torch.Tensor]) -> bool:
    """Chapter 10: `candidate(mask [B, 1, H, W] in [0, 1], factor) -> [B, 1, H/factor, W/factor]` of 0/1:
    binarised at 0.5 (1 = repaint), then nearest-neighbour downsampled, as the inpainting pipeline does."""

    def reference(mask: torch.Tensor, factor: int) -> torch.Tensor:
        binary = (mask >= 0.5).float()
        return F.interpolate(binary, size=(mask.shape[2] // factor, mask.shape[3] // factor))

    gen = torch.Generator().manual_seed(0)
    box = torch.zeros(1, 1, 32, 32)
    box[..., 5:19, 9:30] = 1  # edges off the 4-pixel grid
    soft = torch.zeros(2, 1, 16, 24)
    soft[0, :, 3:11, 2:13], soft[1, :, 6:, 6:] = 0.7, 0.5  # 0.5 is repainted
    noise, ones, zeros = (
        torch.rand(2, 1, 64, 48, generator=gen),
        torch.ones(1, 1, 16, 16),
        torch.zeros(1, 1, 16, 16),
    )
    cases = [("box off the grid, factor 4", (box, 4)), ("box, factor 8", (box, 8)),
             ("soft values, factor 4", (soft, 4)), ("random, factor 8", (noise, 8)),
             ("all ones", (ones, 4)), ("all zeros", (zeros, 8))]  # fmt: skip
    return compare_cases("latent_mask", candidate, reference, cases)


def blend_known(candidate: Callable) -> bool:
    """Chapter 10: `candidate(latents, image_latents, noise, mask, scheduler, next_timestep) -> latents`,
    the blend after each step of inpainting with a text-to-image model: inside the mask (1) keep the
    latents, outside put the input's latents noised to `next_timestep` (a tensor of one timestep), or,
    after the last step (`next_timestep` None), the input's latents themselves."""
    from minisd.schedulers import DDIMScheduler

    def reference(x, known, noise, mask, scheduler, next_t):
        if next_t is not None:
            known = scheduler.add_noise(known, noise, next_t)
        return (1 - mask) * known + mask * x

    gen = torch.Generator().manual_seed(1)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x, known, noise = (torch.randn(2, 4, 8, 8, generator=gen) for _ in range(3))
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 2:6, 3:8], mask[1, :, :4] = 1, 1
    cases = [
        (f"next timestep {t}", (x, known, noise, mask, scheduler, torch.tensor([t]))) for t in (901, 481, 41)
    ]
    everything = torch.ones(2, 1, 8, 8)
    cases += [("after the last step", (x, known, noise, mask, scheduler, None)),
              ("all masked", (x, known, noise, everything, scheduler, torch.tensor([481])))]  # fmt: skip
    return compare_cases("blend_known", candidate, reference, cases)
