"""StableDiffusionImg2ImgPipeline: picture + prompt -> picture, by SDEdit (Meng et al. 2021; chapter 10).

Encode the input, push its latents part of the way into the noise, and denoise from there:
    strength s, n steps -> run k = int(n s) steps, the last k of the n-step schedule
    latents = scheduler.add_noise(vae.encode(image) * 0.18215, noise, first of those timesteps)
s = 1 starts from (almost) pure noise: text-to-image that only borrows the noise seed; s = 0 runs no
step and returns the input through the autoencoder (diffusers refuses it). The call and its
arithmetic are diffusers': a seeded run with the same model reproduces its images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from minisd.errors import UserError
from minisd.models.modeling_utils import reject_unsupported
from minisd.pipelines.image_processing import preprocess_image
from minisd.pipelines.lora_mixin import apply_lora_scale
from minisd.pipelines.sampling import denoise
from minisd.pipelines.stable_diffusion import (
    OUTPUT_TYPES,
    StableDiffusionPipeline,
    StableDiffusionPipelineOutput,
)
from minisd.pipelines.validation import as_real, check_call, size_multiple
from minisd.schedulers import SchedulerMixin, randn_tensor


def check_strength(strength: Any) -> float:
    """strength as a float in [0, 1], or an error naming the range."""
    value = as_real("strength", strength)
    if not 0.0 <= value <= 1.0:
        raise UserError(
            f"strength={value:g}: it must be in [0, 1] (0 keeps the input, 1 redraws it from noise)"
        )
    return value


def strength_timesteps(scheduler: SchedulerMixin, num_inference_steps: int, strength: float) -> torch.Tensor:
    """The timesteps an image-to-image run takes: the tail of the n-step schedule that holds its last
    int(n * strength) steps (empty when that is 0). Tells the scheduler where it starts
    (`set_begin_index`), so that the sigma samplers index their tables from there."""
    steps = min(int(num_inference_steps * strength), num_inference_steps)
    if steps == 0:
        return scheduler.timesteps[:0]
    start = (num_inference_steps - steps) * scheduler.order
    scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def check_image_size(height: int, width: int, multiple: int, name: str = "image") -> None:
    """An input picture's sides must be multiples of the model's size step; say which size to crop to."""
    if height % multiple or width % multiple:
        h, w = max(height // multiple, 1) * multiple, max(width // multiple, 1) * multiple
        raise UserError(
            f"{name} is {width}x{height} pixels (width x height); this model reads sides that are multiples "
            f"of {multiple} (the VAE's factor times the UNet's downsampling): resize or crop it to {w}x{h}"
        )


class StableDiffusionImg2ImgPipeline(StableDiffusionPipeline):
    """Image-to-image with SD v1.x: `pipe(prompt, image=picture, strength=0.75).images`.

    Loads like StableDiffusionPipeline (same folders and single files); see the module docstring.
    """

    def pixel_size(self, image: torch.Tensor) -> tuple[int, int]:
        """(height, width) in pixels of a preprocessed picture or of latents, checked against the model."""
        factor = self.vae_scale_factor if image.shape[1] == self.vae.config["latent_channels"] else 1
        height, width = image.shape[2] * factor, image.shape[3] * factor
        check_image_size(height, width, size_multiple(self.vae_scale_factor, self.unet.config))
        return height, width

    def encode_images(
        self, image: torch.Tensor, batch: int, generator: torch.Generator | list[torch.Generator] | None
    ) -> torch.Tensor:
        """Pictures [N, 3, H, W] in [-1, 1] -> scaled latents [batch, 4, h, w]: each sampled from the VAE's
        posterior (picture i with generator i for a list), then repeated in turn when N divides batch,
        as diffusers does; latents [N, 4, h, w] are only repeated."""
        n = image.shape[0]
        if batch % n:
            raise UserError(f"{n} input pictures for {batch} images: give one, or one per image")
        image = image.to(self.device, self.dtype)
        if image.shape[1] != self.vae.config["latent_channels"]:
            if isinstance(generator, list):
                dists = [self.vae.encode(image[i : i + 1]).latent_dist for i in range(n)]
                image = torch.cat([d.sample(g) for d, g in zip(dists, generator, strict=False)])
            else:
                image = self.vae.encode(image).latent_dist.sample(generator)  # [N, 4, h, w]
            image = image * self.vae.scaling_factor
        return image.repeat(batch // n, 1, 1, 1)

    def noise_like(
        self, latents: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None
    ) -> torch.Tensor:
        """Gaussian noise shaped as `latents`, drawn in fp32 (on the CPU for a CPU generator)."""
        noise = randn_tensor(tuple(latents.shape), generator, self.device, torch.float32)
        return noise.to(self.dtype)

    @torch.inference_mode()
    @apply_lora_scale
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: Any = None,
        strength: float = 0.8,
        num_inference_steps: int | None = 50,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float | None = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int | None = 1,
        eta: float | None = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        ip_adapter_image: Any = None,
        ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' default)
        scheduler: str | SchedulerMixin | None = None,
        callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        progress: bool = True,
        long_prompt: bool = False,
    ) -> StableDiffusionPipelineOutput | tuple:
        """Redraw `image` (PIL, numpy [H, W, 3] or torch [3, H, W] in [0, 1], a batch or a list; or
        latents [B, 4, h, w]) towards the prompt -> `StableDiffusionPipelineOutput(images, None)`.

        `strength` in [0, 1] sets how far into the noise the input goes and so how many of the
        `num_inference_steps` run (int(steps * strength)); the output has the input's size. The other
        arguments are StableDiffusionPipeline's, with diffusers' names, order and defaults.
        """
        reject_unsupported(
            "StableDiffusionImg2ImgPipeline",
            dict(
                timesteps=(timesteps, None),
                sigmas=(sigmas, None),
                eta=(eta, 0.0),
                ip_adapter_image=(ip_adapter_image, None),
                ip_adapter_image_embeds=(ip_adapter_image_embeds, None),
                cross_attention_kwargs=(cross_attention_kwargs, None),
                callback_on_step_end_tensor_inputs=(callback_on_step_end_tensor_inputs, ("latents",)),
            ),
        )
        if image is None:
            raise UserError("give image: the picture to start from (PIL image, numpy array or tensor)")
        strength = check_strength(strength)
        pixels = preprocess_image(image, self.vae.config["latent_channels"])  # [N, 3, H, W] in [-1, 1]
        height, width = self.pixel_size(pixels)
        settings = check_call(
            self, prompt, negative_prompt, prompt_embeds, height, width, num_inference_steps, guidance_scale,
            num_images_per_prompt, generator, None, output_type, OUTPUT_TYPES,
        )  # fmt: skip
        text = self.prepare_text(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guidance_scale, clip_skip,
            settings.num_images_per_prompt, long_prompt,
        )  # fmt: skip
        scheduler = self.resolve_scheduler(scheduler)
        scheduler.set_timesteps(settings.num_inference_steps, device=self.device)
        timesteps = strength_timesteps(scheduler, settings.num_inference_steps, strength)
        generator = settings.generator
        if (
            isinstance(generator, list) and text.batch % len(pixels) == 0
        ):  # diffusers: one picture per generator
            pixels = pixels.repeat(text.batch // len(pixels), 1, 1, 1)
        latents = self.encode_images(pixels, text.batch, generator)  # [B, 4, h, w]
        if len(timesteps):
            noise = self.noise_like(latents, generator)
            latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(text.batch))
            latents = denoise(
                self, latents, timesteps, scheduler, text, guidance_scale, generator,
                callback_on_step_end, callback, progress,
            )  # fmt: skip
        images = self.postprocess(latents, output_type)
        return StableDiffusionPipelineOutput(images, None) if return_dict else (images, None)
