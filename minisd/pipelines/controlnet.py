"""StableDiffusionControlNetPipeline: text-to-image steered by condition images.

The text-to-image loop of StableDiffusionPipeline, with one change at every step: before the UNet
runs, each ControlNet reads the same latents, timestep and text plus its condition image, and its
residuals (times `controlnet_conditioning_scale`, and zero outside [control_guidance_start,
control_guidance_end) of the steps) are added to the UNet's skips. Condition images are prepared
as diffusers does: resized to the output size, RGB values in [0, 1] (not [-1, 1]).
With `guess_mode` and classifier-free guidance the ControlNets see the conditional half only, so
the unconditional prediction is the base model's and guidance pushes towards the condition.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from minisd.errors import UserError
from minisd.models.controlnet import ControlNetModel, MultiControlNetModel
from minisd.pipelines.loading import load_pipeline_parts
from minisd.pipelines.stable_diffusion import StableDiffusionPipeline
from minisd.pipelines.validation import check_prompts

ImageInput = Image.Image | np.ndarray | torch.Tensor | list


def prepare_control_image(
    image: ImageInput, height: int | None, width: int | None, multiple: int = 8, channels: int = 3
) -> torch.Tensor:
    """A condition image (PIL, float array [H, W, C] in [0, 1], tensor [C, H, W] in [0, 1], or a
    list / batch of them) -> float32 [N, C, height, width] in [0, 1].

    PIL images become RGB and are resized with Lanczos, arrays and tensors with nearest neighbours,
    as diffusers does; without height/width, the first image's size rounded down to `multiple`.
    """
    images = image if isinstance(image, list) else [image]
    if not images:
        raise UserError("image is an empty list: give a condition image")
    first = images[0]
    if isinstance(first, Image.Image):
        h, w = (first.height, first.width) if height is None or width is None else (height, width)
        height, width = height or h - h % multiple, width or w - w % multiple
        arrays = [np.asarray(i.convert("RGB").resize((width, height), Image.LANCZOS)) for i in images]
        x = torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    elif isinstance(first, np.ndarray | torch.Tensor):
        if isinstance(first, np.ndarray):
            batch = [torch.from_numpy(np.asarray(i, dtype=np.float32)) for i in images]
            batch = [b.permute(2, 0, 1) if b.ndim == 3 else b.permute(0, 3, 1, 2) for b in batch]
        else:
            batch = [i.detach().float() for i in images]
        x = torch.cat([b if b.ndim == 4 else b[None] for b in batch])  # [N, C, H, W]
        h, w = x.shape[-2:]
        height, width = height or h - h % multiple, width or w - w % multiple
        x = F.interpolate(x, size=(height, width))
    else:
        raise TypeError(
            "image must be a PIL image, a numpy array, a torch tensor or a list of them, "
            f"got {type(first).__name__}"
        )
    if x.shape[1] != channels:
        raise UserError(
            f"the condition image has {x.shape[1]} channels; this ControlNet reads {channels} "
            "(arrays are [H, W, C], tensors [C, H, W] or [B, C, H, W], values in [0, 1])"
        )
    return x


class ControlCall(NamedTuple):
    """What one call hands to the denoising steps: the prepared conditions and their schedules."""

    images: list[torch.Tensor]  # per ControlNet: [B, 3, H, W] (doubled for CFG unless guess_mode)
    scales: list[float]
    starts: list[float]
    ends: list[float]
    guess_mode: bool
    cfg: bool


class StableDiffusionControlNetPipeline(StableDiffusionPipeline):
    """`pipe(prompt, image=condition).images`: StableDiffusionPipeline plus one ControlNet, or several
    (a list or a MultiControlNetModel: then `image`, `controlnet_conditioning_scale` and the guidance
    windows are lists, one entry per ControlNet)."""

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        controlnet: ControlNetModel | list[ControlNetModel] | MultiControlNetModel,
        scheduler,
        safety_checker: None = None,
        feature_extractor: None = None,
        image_encoder: None = None,
        requires_safety_checker: bool = True,
        *,
        scheduler_config: dict | None = None,
        mask_text_padding: bool = False,
    ):
        super().__init__(
            vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor, image_encoder,
            requires_safety_checker, scheduler_config=scheduler_config, mask_text_padding=mask_text_padding,
        )  # fmt: skip
        self.controlnet = (
            MultiControlNetModel(controlnet) if isinstance(controlnet, list | tuple) else controlnet
        )
        self._control: ControlCall | None = None

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        controlnet: ControlNetModel | list[ControlNetModel] | MultiControlNetModel,
        config: str | os.PathLike | None = None,
        tokenizer: Any = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        variant: str | None = None,
        use_ema: bool | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> StableDiffusionControlNetPipeline:
        """A base model as StableDiffusionPipeline.from_pretrained loads it, with `controlnet` (loaded
        already, e.g. `ControlNetModel.from_pretrained(folder)`) moved to its device and dtype."""
        parts = load_pipeline_parts(
            pretrained_model_name_or_path, config, tokenizer, dtype, device, variant, use_ema, torch_dtype
        )
        pipe = cls(**parts, controlnet=controlnet)
        pipe.controlnet.to(device=pipe.device, dtype=pipe.dtype)
        return pipe

    @property
    def nets(self) -> list[ControlNetModel]:
        return (
            list(self.controlnet.nets)
            if isinstance(self.controlnet, MultiControlNetModel)
            else [self.controlnet]
        )

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        """Move (and cast) the models and the ControlNets; returns the pipeline."""
        super().to(device, dtype)
        self.controlnet.to(device=device, dtype=dtype)
        return self

    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: ImageInput | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int | None = 1,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        ip_adapter_image: Any = None,
        ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        controlnet_conditioning_scale: float | list[float] = 1.0,
        guess_mode: bool = False,
        control_guidance_start: float | list[float] = 0.0,
        control_guidance_end: float | list[float] = 1.0,
        clip_skip: int | None = None,
        callback_on_step_end: Any = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' default)
        scheduler: Any = None,
        callback: Any = None,
        progress: bool = True,
        long_prompt: bool = False,
    ):
        """Generate images steered by `image` (see the module docstring); every other argument means
        what it means in StableDiffusionPipeline. The output size defaults to the condition's."""
        nets = self.nets
        per_net = [image] if len(nets) == 1 else image
        if image is None or not isinstance(per_net, list) or len(per_net) != len(nets):
            raise UserError(f"give image=: one condition image per ControlNet ({len(nets)})")
        scales, starts, ends = (
            _per_net(name, value, len(nets))
            for name, value in (
                ("controlnet_conditioning_scale", controlnet_conditioning_scale),
                ("control_guidance_start", control_guidance_start),
                ("control_guidance_end", control_guidance_end),
            )
        )
        for s, e in zip(starts, ends, strict=True):
            if not 0.0 <= s < e <= 1.0:
                raise UserError(
                    f"control_guidance_start={s}, control_guidance_end={e}: need 0 <= start < end <= 1"
                )
        guess_mode = guess_mode or nets[0].config["global_pool_conditions"]
        prompts = check_prompts("prompt", prompt) if prompt_embeds is None else prompt_embeds.shape[0]
        per_prompt = num_images_per_prompt or 1
        images = []
        for net, condition in zip(nets, per_net, strict=True):
            x = prepare_control_image(
                condition, height, width, self.vae_scale_factor, net.config["conditioning_channels"]
            )
            height, width = x.shape[-2:]
            if x.shape[0] not in (1, prompts):
                raise UserError(
                    f"{x.shape[0]} condition images for {prompts} prompts: give one, or one per prompt"
                )
            x = x.repeat_interleave(prompts * per_prompt if x.shape[0] == 1 else per_prompt, dim=0)
            cfg = guidance_scale > 1.0
            images.append(torch.cat([x] * 2) if cfg and not guess_mode else x)
        self._control = ControlCall(
            [i.to(self.device, net.dtype) for i, net in zip(images, nets, strict=True)],
            scales, starts, ends, guess_mode, guidance_scale > 1.0,
        )  # fmt: skip
        try:
            return super().__call__(
                prompt, int(height), int(width), num_inference_steps, timesteps, sigmas, guidance_scale,
                negative_prompt, num_images_per_prompt, eta, generator, latents, prompt_embeds,
                negative_prompt_embeds, ip_adapter_image, ip_adapter_image_embeds, output_type, return_dict,
                cross_attention_kwargs, guidance_rescale=0.0, clip_skip=clip_skip,
                callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, scheduler=scheduler,
                callback=callback, progress=progress, long_prompt=long_prompt,
            )  # fmt: skip
        finally:
            self._control = None

    def predict_noise(self, latent_model_input, t, context, mask, step, num_steps):
        """The UNet's prediction with the ControlNets' residuals added to its skips."""
        control = self._control
        if control is None:
            raise RuntimeError("predict_noise runs inside a pipeline call, which prepares the condition")
        keep = [
            0.0 if step / num_steps < s or (step + 1) / num_steps > e else 1.0
            for s, e in zip(control.starts, control.ends, strict=True)
        ]
        scales = [scale * k for scale, k in zip(control.scales, keep, strict=True)]
        x, text, text_mask = latent_model_input, context, mask
        if control.guess_mode and control.cfg:  # the ControlNets read the conditional half only
            x, text = x.chunk(2)[1], text.chunk(2)[1]
            text_mask = None if mask is None else mask.chunk(2)[1]
        if isinstance(self.controlnet, MultiControlNetModel):
            down, mid = self.controlnet(
                x, t, text, control.images, scales, guess_mode=control.guess_mode, return_dict=False,
                encoder_attention_mask=text_mask,
            )  # fmt: skip
        else:
            down, mid = self.controlnet(
                x, t, text, control.images[0], scales[0], guess_mode=control.guess_mode, return_dict=False,
                encoder_attention_mask=text_mask,
            )  # fmt: skip
        if control.guess_mode and control.cfg:  # zero residuals for the unconditional half
            down = [torch.cat([torch.zeros_like(d), d]) for d in down]
            mid = torch.cat([torch.zeros_like(mid), mid])
        return self.unet(
            latent_model_input, t, encoder_hidden_states=context, encoder_attention_mask=mask,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
        ).sample  # fmt: skip


def _per_net(name: str, value: float | list[float], n: int) -> list[float]:
    """One number per ControlNet: a single number is repeated; a list must have n entries."""
    values = list(value) if isinstance(value, list | tuple) else [value] * n
    if len(values) != n:
        raise UserError(
            f"{name} has {len(values)} entries for {n} ControlNets: give one, or one per ControlNet"
        )
    return [float(v) for v in values]
