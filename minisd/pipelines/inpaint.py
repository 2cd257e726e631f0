"""StableDiffusionInpaintPipeline: repaint the masked region of a picture (chapter 10).

Two ways, chosen by the UNet's input channels, as diffusers chooses them:
- 4 (any text-to-image model): after every step the region outside the mask is replaced by the input's
  latents noised to the next timestep, so only the masked region is drawn; seams can show at its edge.
- 9 (an inpainting UNet, like sd-v1-5-inpainting): the UNet reads [latents, mask at latent size,
  latents of the picture with the masked region blanked] on its channels and draws the whole picture
  knowing what it must keep.
The mask is 1 where to repaint; at latent size it is the nearest-neighbour downsampling of the pixel mask.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from minisd.errors import UserError
from minisd.models.modeling_utils import reject_unsupported
from minisd.pipelines.image_processing import preprocess_image, preprocess_mask
from minisd.pipelines.img2img import StableDiffusionImg2ImgPipeline, check_strength, strength_timesteps
from minisd.pipelines.lora_mixin import apply_lora_scale
from minisd.pipelines.sampling import denoise
from minisd.pipelines.stable_diffusion import OUTPUT_TYPES, StableDiffusionPipelineOutput
from minisd.pipelines.validation import check_call
from minisd.schedulers import SchedulerMixin


class StableDiffusionInpaintPipeline(StableDiffusionImg2ImgPipeline):
    """Inpainting with SD v1.x: `pipe(prompt, image=picture, mask_image=mask).images` (module docstring)."""

    unet_input_channels = (4, 9)  # a text-to-image UNet (blend) or an inpainting one

    def check_inputs_of_unet(self, masked_image_latents: torch.Tensor | None) -> int:
        """The UNet's input channels (4 or 9), refusing inputs that the other kind needs."""
        channels = self.unet.config["in_channels"]
        if channels not in (4, 9):
            raise UserError(
                f"this UNet reads {channels} input channels: inpainting needs a text-to-image UNet (4) or "
                "an inpainting UNet (9: latents, mask, masked-picture latents)"
            )
        if channels == 4 and masked_image_latents is not None:
            raise UserError(
                "masked_image_latents is an input of inpainting UNets (in_channels 9) and this UNet reads 4: "
                "leave masked_image_latents None (the mask is then blended in at every step), or load an "
                "inpainting model such as sd-v1-5-inpainting"
            )
        return channels

    def mask_inputs(
        self,
        mask: torch.Tensor,
        masked_image: torch.Tensor,
        batch: int,
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask [batch, 1, h, w] at latent size, masked-picture latents [batch, 4, h, w])."""
        h, w = mask.shape[2] // self.vae_scale_factor, mask.shape[3] // self.vae_scale_factor
        if masked_image.shape[1] == self.vae.config["latent_channels"] and masked_image.shape[2:] != (h, w):
            raise UserError(
                f"masked_image_latents have shape {tuple(masked_image.shape)}; "
                f"this picture needs [B, 4, {h}, {w}]"
            )
        if batch % mask.shape[0]:
            raise UserError(f"{mask.shape[0]} masks for {batch} images: give one, or one per image")
        mask = F.interpolate(mask, size=(h, w)).to(self.device, self.dtype)  # nearest: stays 0/1
        return mask.repeat(batch // mask.shape[0], 1, 1, 1), self.encode_images(
            masked_image, batch, generator
        )

    @torch.inference_mode()
    @apply_lora_scale
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: Any = None,
        mask_image: Any = None,
        masked_image_latents: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        padding_mask_crop: int | None = None,
        strength: float = 1.0,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int | None = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
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
        """Repaint where `mask_image` is 1 (white) -> `StableDiffusionPipelineOutput(images, None)`.

        `image` as for image-to-image (pixels only); `mask_image` one channel (or three equal ones) in
        [0, 1], binarised at 0.5, the picture's size. `height`/`width`, when given, must be that size
        (resize the inputs yourself). `strength` < 1 starts from the noised input instead of pure
        noise; 0 returns the autoencoded input. `latents` is the start noise [B, 4, h, w] (with
        strength < 1 it is added to the input's latents). The rest as in StableDiffusionPipeline.
        """
        reject_unsupported(
            "StableDiffusionInpaintPipeline",
            dict(
                padding_mask_crop=(padding_mask_crop, None),
                timesteps=(timesteps, None),
                sigmas=(sigmas, None),
                eta=(eta, 0.0),
                ip_adapter_image=(ip_adapter_image, None),
                ip_adapter_image_embeds=(ip_adapter_image_embeds, None),
                cross_attention_kwargs=(cross_attention_kwargs, None),
                callback_on_step_end_tensor_inputs=(callback_on_step_end_tensor_inputs, ("latents",)),
            ),
        )
        if image is None or mask_image is None:
            raise UserError("give image (the picture) and mask_image (1 = repaint, 0 = keep)")
        channels = self.check_inputs_of_unet(masked_image_latents)
        strength = check_strength(strength)
        pixels = preprocess_image(image, latent_channels=0)  # [N, 3, H, W] in [-1, 1]
        mask = preprocess_mask(mask_image)  # [M, 1, H, W] of 0/1
        if mask.shape[2:] != pixels.shape[2:]:
            raise UserError(
                f"mask_image is {mask.shape[3]}x{mask.shape[2]} pixels and image {pixels.shape[3]}x"
                f"{pixels.shape[2]} (width x height): give a mask of the picture's size"
            )
        size = self.pixel_size(pixels)
        if (height, width) != (None, None) and (height, width) != size:
            raise UserError(
                f"height={height}, width={width} differ from the picture's {size[0]}x{size[1]}: resize the "
                "image and mask to the size you want, or leave height and width None"
            )
        settings = check_call(
            self, prompt, negative_prompt, prompt_embeds, *size, num_inference_steps, guidance_scale,
            num_images_per_prompt, generator, latents, output_type, OUTPUT_TYPES,
        )  # fmt: skip
        text = self.prepare_text(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guidance_scale, clip_skip,
            settings.num_images_per_prompt, long_prompt,
        )  # fmt: skip
        scheduler = self.resolve_scheduler(scheduler)
        scheduler.set_timesteps(settings.num_inference_steps, device=self.device)
        timesteps = strength_timesteps(scheduler, settings.num_inference_steps, strength)
        generator, batch = settings.generator, text.batch
        # the draws in diffusers' order: the input's latents, the start noise, the masked picture's latents
        image_latents = None
        if channels == 4 or strength < 1.0 or not len(timesteps):
            image_latents = self.encode_images(pixels, batch, generator)  # [B, 4, h, w]
        if not len(timesteps):  # strength 0 (or under one step): the input through the autoencoder
            images = (
                image_latents if output_type == "latent" else self.postprocess(image_latents, output_type)
            )
            return StableDiffusionPipelineOutput(images, None) if return_dict else (images, None)
        noise = self.prepare_latents(batch, *size, generator, latents)  # [B, 4, h, w]
        if strength == 1.0:
            start = noise * scheduler.init_noise_sigma
        else:
            start = scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(batch))
        masked = pixels * (mask < 0.5) if masked_image_latents is None else masked_image_latents
        mask, masked_latents = self.mask_inputs(mask, masked, batch, generator)
        cfg = 2 if guidance_scale > 1.0 else 1
        extra, blend = None, None
        if channels == 9:
            extra = torch.cat([mask, masked_latents], dim=1).repeat(cfg, 1, 1, 1)  # [2B, 5, h, w]
        else:

            def blend(i: int, x: torch.Tensor) -> torch.Tensor:
                """Outside the mask, the input's latents at the noise level the next step starts from."""
                known = image_latents
                if i < len(timesteps) - 1:
                    known = scheduler.add_noise(image_latents, noise, timesteps[i + 1 : i + 2])
                return (1 - mask) * known + mask * x

        latents = denoise(
            self, start, timesteps, scheduler, text, guidance_scale, generator,
            callback_on_step_end, callback, progress, extra, blend,
        )  # fmt: skip
        images = self.postprocess(latents, output_type)
        return StableDiffusionPipelineOutput(images, None) if return_dict else (images, None)
