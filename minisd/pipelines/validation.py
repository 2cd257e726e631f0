"""Checking a pipeline call's arguments before any work, and its latents while it works (chapter 06).

Every message names the argument, the value and a fix. Integers are accepted through
`operator.index` (so numpy integers work, 7.5 and "32" do not), reals as `numbers.Real`.
The sizes a model can draw are multiples of the VAE's factor times the UNet's downsampling (64 for
SD v1.5, 8 for the tiny shapes model); `max_pixels` and `max_steps` bound the work of one call.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, NamedTuple

import torch

from minisd.errors import NonFiniteError, UserError

MAX_PIXELS = 2048 * 2048  # 16x SD v1.5's 512x512; a pipeline's `max_pixels` (None: no bound) overrides it
MAX_SIDE = 4096  # a very long thin picture costs attention over its whole length
MAX_STEPS = 1000  # the number of noise levels the models were trained with


class CallSettings(NamedTuple):
    """The checked, normalised arguments of a pipeline call."""

    height: int
    width: int
    num_inference_steps: int
    num_images_per_prompt: int
    generator: torch.Generator | list[torch.Generator] | None


def as_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int (numpy integers too), within [minimum, maximum]; errors name the argument."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        hint = f" (write {int(value)})" if isinstance(value, float) and value.is_integer() else ""
        raise TypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r:.40}{hint}"
        ) from None
    if minimum is not None and number < minimum:
        raise UserError(f"{name}={number}: it must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise UserError(f"{name}={number}: it must be at most {maximum}")
    return number


def as_real(name: str, value: Any) -> float:
    """`value` as a finite float; a string, a bool, NaN or inf is refused by name."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r:.40}")
    if not math.isfinite(value):
        raise UserError(f"{name}={value!r}: it must be a finite number (e.g. 7.5)")
    return float(value)


def check_prompts(name: str, prompt: Any, required: bool = True) -> int:
    """The number of prompts in a string or a non-empty list of strings; None is 0 unless required."""
    if prompt is None:
        if required:
            raise UserError(f"give {name} (a string or a list of strings)")
        return 0
    if isinstance(prompt, str):
        return 1
    if not isinstance(prompt, list | tuple):
        raise TypeError(
            f"{name} must be a string or a list of strings, got {type(prompt).__name__} {prompt!r:.40}"
        )
    if not prompt:
        raise UserError(f"{name} is an empty list: give at least one prompt")
    for i, p in enumerate(prompt):
        if not isinstance(p, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(p).__name__} {p!r:.40}")
    return len(prompt)


def size_multiple(vae_scale_factor: int, unet_config: dict) -> int:
    """Pixels per side must be a multiple of this: the VAE's factor times 2 per UNet downsampler."""
    return vae_scale_factor * 2 ** (len(unet_config["down_block_types"]) - 1)


def check_size(height: int, width: int, multiple: int, max_pixels: int | None) -> None:
    """Refuse sizes the models cannot draw, naming the nearest ones they can."""
    for name, value in (("height", height), ("width", width)):
        if value % multiple:
            below = max(value // multiple * multiple, multiple)
            raise UserError(
                f"{name}={value}: this model draws sizes that are multiples of {multiple} (the VAE's factor "
                f"times the UNet's downsampling); the nearest are {below} and {below + multiple}"
            )
        if value > MAX_SIDE:
            raise UserError(f"{name}={value}: at most {MAX_SIDE} pixels a side")
    if max_pixels is not None and height * width > max_pixels:
        raise UserError(
            f"{height}x{width} is {height * width:,} pixels, more than this pipeline's bound of "
            f"{max_pixels:,}; draw smaller (or set pipe.max_pixels = None to lift the bound)"
        )


def check_generator(generator: Any, batch: int) -> torch.Generator | list[torch.Generator] | None:
    """None, one torch.Generator, or a list of one per image (a list of one is the same as one)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if not isinstance(generator, list) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(
            f"generator must be a torch.Generator (torch.Generator().manual_seed(42)) or a list of them, "
            f"got {generator!r:.60}"
        )
    if len(generator) == 1:
        return generator[0]
    if len(generator) != batch:
        raise UserError(f"{len(generator)} generators for {batch} images: give one, or one per image")
    return generator


def check_call(
    pipe: Any,
    prompt: Any,
    negative_prompt: Any,
    prompt_embeds: Any,
    height: Any,
    width: Any,
    num_inference_steps: Any,
    guidance_scale: Any,
    num_images_per_prompt: Any,
    generator: Any,
    latents: Any,
    output_type: Any,
    output_types: tuple[str, ...],
) -> CallSettings:
    """Check a call's arguments before any work; returns the normalised ones (default size filled in)."""
    channels = pipe.unet.config["in_channels"]
    if channels not in getattr(pipe, "unet_input_channels", (4,)):
        raise UserError(
            f"this UNet reads {channels} input channels, a text-to-image pipeline gives it 4: an inpainting "
            "UNet (9) goes in StableDiffusionInpaintPipeline with image and mask_image (command line: "
            "--init-image and --mask)"
        )
    if (prompt is None) == (prompt_embeds is None):
        raise UserError("give either prompt (a string or a list of strings) or prompt_embeds, not both")
    for name, tensor in (("latents", latents), ("prompt_embeds", prompt_embeds)):
        if tensor is not None and not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor is not None and not torch.isfinite(tensor).all():
            raise NonFiniteError(f"the given {name} hold NaN or inf values")
    batch = check_prompts("prompt", prompt) if prompt_embeds is None else prompt_embeds.shape[0]
    if (n := check_prompts("negative_prompt", negative_prompt, required=False)) not in (0, 1, batch):
        raise UserError(f"{n} negative prompts for {batch} prompts: give one, or one per prompt")
    default_size = pipe.unet.config["sample_size"] * pipe.vae_scale_factor
    height = default_size if height is None else as_int("height", height, minimum=1)
    width = default_size if width is None else as_int("width", width, minimum=1)
    check_size(height, width, size_multiple(pipe.vae_scale_factor, pipe.unet.config), pipe.max_pixels)
    steps = as_int("num_inference_steps", num_inference_steps, minimum=1, maximum=pipe.max_steps)
    as_real("guidance_scale", guidance_scale)
    per_prompt = (
        1 if num_images_per_prompt is None else as_int("num_images_per_prompt", num_images_per_prompt, 1)
    )
    generator = check_generator(generator, batch * per_prompt)
    if output_type not in output_types:
        raise UserError(f"unknown output_type {output_type!r}; choose one of {output_types}")
    return CallSettings(height, width, steps, per_prompt, generator)


def check_latents(latents: torch.Tensor, i: int, t: Any, steps: int, dtype: torch.dtype) -> None:
    """Raise at the step where the latents stop being finite, naming the usual causes."""
    if torch.isfinite(latents).all():
        return
    fp16 = " an fp16 overflow (use dtype float32 or bfloat16)," if dtype == torch.float16 else ""
    raise NonFiniteError(
        f"the latents became NaN/inf at step {i + 1} of {steps} (timestep {int(t)}): usual causes are"
        f"{fp16} a huge guidance_scale, a scheduler setting out of range, or corrupt weights"
    )


def check_images(images: torch.Tensor) -> None:
    """Refuse to return a picture with NaN values (it would be black), saying why it happens."""
    if not torch.isfinite(images).all():
        raise NonFiniteError(
            "the decoded pictures hold NaN/inf values: the VAE overflowed (decode in float32), or the "
            "latents or the VAE's weights are damaged"
        )
