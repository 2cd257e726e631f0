"""The sampling loop every pipeline shares (chapter 06; image-to-image and inpainting in chapter 10).

Per step: the latents (twice, for classifier-free guidance) -> `scheduler.scale_model_input` ->
(inpainting UNets: + mask and masked-image latents on the channels) -> UNet -> CFG ->
`scheduler.step` -> (legacy inpainting: the known region put back) -> callbacks. The order follows
diffusers, so a seeded run reproduces its images.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from minisd.pipelines.validation import check_latents
from minisd.schedulers import SchedulerMixin


class TextConditioning(NamedTuple):
    """What the UNet reads of the text in one call: `context` [2B or B, 77, D] ([negatives; prompts]
    with CFG), the padding `mask` [2B or B, 77] or None, and `batch`, the number of images."""

    context: torch.Tensor
    mask: torch.Tensor | None
    batch: int


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """CFG (Ho & Salimans 2022): start from the unconditional prediction and move `scale` times
    the step towards the text-conditioned one; scale 1 is the conditional prediction alone."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def step_kwargs(scheduler: SchedulerMixin, generator: torch.Generator | list[torch.Generator] | None) -> dict:
    """The generator for samplers whose step draws noise (their step signature has one), as diffusers."""
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


def denoise(
    pipe: Any,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    scheduler: SchedulerMixin,
    text: TextConditioning,
    guidance_scale: float,
    generator: torch.Generator | list[torch.Generator] | None = None,
    callback_on_step_end: Callable[..., dict] | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    progress: bool = True,
    extra_channels: torch.Tensor | None = None,
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run `pipe.predict_noise` (the UNet, with a ControlNet's residuals in that pipeline) and `scheduler`
    over `timesteps` from `latents` [B, 4, h, w]; returns the last latents.

    `extra_channels` [2B or B, C, h, w] are concatenated to the scaled UNet input (the inpainting
    UNet's mask and masked-image latents); `after_step(i, latents)` may replace the latents after
    each step, before the callbacks (legacy inpainting's blend with the input).
    """
    do_cfg = guidance_scale > 1.0
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="denoising")):
        x = torch.cat([latents] * 2) if do_cfg else latents
        x = scheduler.scale_model_input(x, t)
        if extra_channels is not None:
            x = torch.cat([x, extra_channels], dim=1)  # [2B, 4 + C, h, w]
        eps = pipe.predict_noise(x, t, text.context, text.mask, i, len(timesteps))  # [2B or B, 4, h, w]
        if do_cfg:
            eps = classifier_free_guidance(*eps.chunk(2), guidance_scale)  # [B, 4, h, w]
        latents = scheduler.step(eps, t, latents, **step_kwargs(scheduler, generator)).prev_sample
        if after_step is not None:
            latents = after_step(i, latents)
        check_latents(latents, i, t, len(timesteps), pipe.dtype)
        if callback_on_step_end is not None:
            latents = callback_on_step_end(pipe, i, t, {"latents": latents}).get("latents", latents)
        if callback is not None:
            callback(i, t, latents)
    return latents
