"""StableDiffusionPipeline: prompt -> image with Stable Diffusion v1.x (chapter 06).

The five parts and what flows between them (SD v1.5, 512x512):
    tokenizer     "a cat"          -> ids [B, 77]
    text_encoder  ids              -> text embeddings [B, 77, 768]   (and "" for the unconditional half)
    noise         CPU generator    -> latents [B, 4, 64, 64] * init_noise_sigma
    unet x steps  latents, t, text -> eps; CFG: eps_u + g (eps_c - eps_u); scheduler.step -> latents
    vae.decode    latents / 0.18215 -> image [B, 3, 512, 512] in [-1, 1] -> [0, 1]
The order of operations (and of the two CFG halves) follows diffusers, so a run with the same
weights and injected latents reproduces its images. So do the call's arguments, its defaults (the
image size from the UNet's `sample_size`, the scheduler from the folder) and its result,
`StableDiffusionPipelineOutput(images, nsfw_content_detected)`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from minisd.loading.textual_inversion import TextualInversionLoaderMixin
from minisd.models.clip import CLIPTextModel
from minisd.models.modeling_utils import reject_unsupported
from minisd.models.tokenizer import CLIPTokenizer
from minisd.models.unet import UNet2DConditionModel
from minisd.models.vae import AutoencoderKL
from minisd.pipelines.image_processing import to_pil
from minisd.pipelines.loading import load_pipeline_parts
from minisd.pipelines.long_prompt import encode_long_prompt
from minisd.pipelines.lora_mixin import StableDiffusionLoraLoaderMixin, apply_lora_scale
from minisd.pipelines.sampling import TextConditioning, denoise
from minisd.pipelines.validation import MAX_PIXELS, MAX_STEPS, check_call, check_images
from minisd.schedulers import SchedulerMixin, get_scheduler, randn_tensor

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class StableDiffusionPipelineOutput(NamedTuple):
    """What a pipeline call returns: the images (PIL list, array, tensor or latents, by `output_type`)
    and, as in diffusers, a per-image NSFW flag: None, since minisd has no safety checker."""

    images: list | np.ndarray | torch.Tensor
    nsfw_content_detected: list[bool] | None


def _negative_prompts(negative_prompt: str | list[str] | None, b: int) -> list[str]:
    """One negative prompt per prompt: "" by default, a single one repeated, or a list of b."""
    negative = [""] * b if negative_prompt is None else negative_prompt
    negative = [negative] * b if isinstance(negative, str) else list(negative)
    if len(negative) != b:
        raise ValueError(f"{len(negative)} negative prompts for {b} prompts: give one, or one per prompt")
    return negative


class StableDiffusionPipeline(StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin):
    """Text-to-image with SD v1.x: `pipe(prompt).images` -> list of PIL images (see the module docstring).

    The constructor takes diffusers' arguments in diffusers' order; minisd has no safety checker,
    feature extractor or image encoder, so those must stay None (`requires_safety_checker` is
    accepted and has nothing to check). `scheduler_config` and `mask_text_padding` are minisd's.
    `max_pixels` and `max_steps` bound the work of one call (None: no bound).
    """

    max_pixels: int | None = MAX_PIXELS
    max_steps: int | None = MAX_STEPS

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        safety_checker: None = None,
        feature_extractor: None = None,
        image_encoder: None = None,
        requires_safety_checker: bool = True,
        *,
        scheduler_config: dict | None = None,
        mask_text_padding: bool = False,
    ):
        reject_unsupported(
            "StableDiffusionPipeline",
            dict(
                safety_checker=(safety_checker, None),
                feature_extractor=(feature_extractor, None),
                image_encoder=(image_encoder, None),
            ),
        )
        self.tokenizer, self.text_encoder, self.unet, self.vae = tokenizer, text_encoder, unet, vae
        # hide the padding after EOT from the UNet's cross-attention: off for SD, which was trained
        # reading all 77 tokens; on for chapter 07's tiny model (model_index.json says which)
        self.mask_text_padding = mask_text_padding
        self.scheduler = scheduler
        # the model's scheduler_config.json, to build scheduler=<name> from: it holds keys the default
        # scheduler does not use (v1.5's clip_sample=False matters to DDIM)
        self.scheduler_config = dict(scheduler_config or scheduler.config)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        config: str | os.PathLike | None = None,
        tokenizer: CLIPTokenizer | str | os.PathLike | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        variant: str | None = None,
        use_ema: bool | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> StableDiffusionPipeline:
        """Load a diffusers folder (model_index.json, unet/, vae/, ...) or one original checkpoint file;
        a hub id such as "stable-diffusion-v1-5/stable-diffusion-v1-5" is downloaded first (needs
        the optional huggingface_hub).

        For a single file (`.safetensors` or `.ckpt`, never unpickling code), `config` names a
        diffusers-layout folder holding the configs; None means SD v1.5. `use_ema`: see
        minisd.loading. `device` defaults to `get_device()`, `dtype` (or diffusers' older spelling
        `torch_dtype`) to float32.
        """
        parts = load_pipeline_parts(
            pretrained_model_name_or_path, config, tokenizer, dtype, device, variant, use_ema, torch_dtype
        )
        return cls(**parts)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent side: 2 per downsampling VAE block (8 for SD, 4 for chapter 07's tiny model)."""
        return self.vae.downscale

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        """Move (and cast) the three models; returns the pipeline."""
        for model in (self.text_encoder, self.unet, self.vae):
            model.to(device=device, dtype=dtype)
        return self

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None = None,
        do_classifier_free_guidance: bool = True,
        clip_skip: int | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text embeddings [B, 77, 768] of the prompts and (with CFG) of the negative prompts.

        As in diffusers, `clip_skip` applies to the prompt only; negative prompts ("" by default)
        use the last layer.
        """
        if prompt_embeds is None:
            ids = self.tokenizer(prompt).to(self.device)  # [B, 77]
            prompt_embeds = self.text_encoder(ids, clip_skip=clip_skip or 0)[0]  # [B, 77, 768]
        prompt_embeds = prompt_embeds.to(self.device, self.dtype)
        if not do_classifier_free_guidance:
            return prompt_embeds, None
        b = prompt_embeds.shape[0]
        if negative_prompt_embeds is None:
            negative = _negative_prompts(negative_prompt, b)
            negative_prompt_embeds = self.text_encoder(self.tokenizer(negative).to(self.device))[0]
        if negative_prompt_embeds.shape != prompt_embeds.shape:
            raise ValueError(
                f"negative_prompt_embeds {tuple(negative_prompt_embeds.shape)} and prompt_embeds "
                f"{tuple(prompt_embeds.shape)} must have the same shape (for embeddings longer than 77 "
                "tokens, long_prompt=True encodes the negative prompt in as many chunks)"
            )
        return prompt_embeds, negative_prompt_embeds.to(self.device, self.dtype)

    def text_attention_mask(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None = None,
        do_classifier_free_guidance: bool = True,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """bool [B or 2B, 77]: which tokens the UNet reads (up to EOT), ordered [negatives; prompts]."""
        if prompt_embeds is not None or (do_classifier_free_guidance and negative_prompt_embeds is not None):
            raise ValueError(
                "this model hides the padding tokens from the UNet (mask_text_padding), which needs the "
                "token ids: give prompt and negative_prompt as text, not embeddings"
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = _negative_prompts(negative_prompt, len(prompts)) if do_classifier_free_guidance else []
        texts = negatives + prompts
        with warnings.catch_warnings():  # encode_prompt has warned about a too-long prompt already
            warnings.simplefilter("ignore")
            return self.tokenizer.attention_mask(self.tokenizer(texts)).to(self.device)

    def prepare_latents(
        self,
        batch_size: int,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial latents [B, 4, H/f, W/f] (f = vae_scale_factor): drawn in fp32 (on the CPU for a
        CPU generator, so seeds reproduce across devices and dtypes), or the given ones, checked."""
        shape = (
            batch_size,
            self.vae.config["latent_channels"],  # 4, also for an inpainting UNet that reads 9
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}; expected {shape} for this call")
        return latents.to(self.device, self.dtype)

    @torch.inference_mode()
    @apply_lora_scale
    def __call__(
        self,
        prompt: str | list[str] | None = None,
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
        guidance_rescale: float = 0.0,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (diffusers' default)
        scheduler: str | SchedulerMixin | None = None,
        callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        progress: bool = True,
        long_prompt: bool = False,
    ) -> StableDiffusionPipelineOutput | tuple:
        """Generate images -> `StableDiffusionPipelineOutput(images, nsfw_content_detected=None)`:
        a PIL list ("pil"), float [B, H, W, 3] in [0, 1] ("np"), [B, 3, H, W] in [0, 1] ("pt") or
        the final latents ("latent"); `return_dict=False` gives the plain tuple.

        The arguments are diffusers', in its order and with its defaults: `height`/`width` default
        to the UNet's `sample_size` times `vae_scale_factor`; guidance_scale <= 1 skips
        classifier-free guidance (one UNet pass per step). `callback_on_step_end(pipe, i, t,
        {"latents": ...})` runs after each step and may return replaced latents. diffusers' options
        minisd does not implement are refused when set. minisd's own, after them: `scheduler` takes
        a name ("ddim", "euler_a", "dpm++2m_karras", ...) built from the model's scheduler config,
        or a scheduler object, for this call only; `callback(i, t, latents)` runs after each step;
        `progress` shows a progress bar; `long_prompt=True` reads prompts as the AUTOMATIC1111 web UI
        does: any length (chunks of 75 tokens), `(word:1.2)` weights and BREAK (minisd.pipelines.long_prompt).
        """
        reject_unsupported(
            "StableDiffusionPipeline",
            dict(
                timesteps=(timesteps, None),
                sigmas=(sigmas, None),
                eta=(eta, 0.0),
                ip_adapter_image=(ip_adapter_image, None),
                ip_adapter_image_embeds=(ip_adapter_image_embeds, None),
                cross_attention_kwargs=(cross_attention_kwargs, None),
                guidance_rescale=(guidance_rescale, 0.0),
                callback_on_step_end_tensor_inputs=(callback_on_step_end_tensor_inputs, ("latents",)),
            ),
        )
        settings = check_call(
            self, prompt, negative_prompt, prompt_embeds, height, width, num_inference_steps, guidance_scale,
            num_images_per_prompt, generator, latents, output_type, OUTPUT_TYPES,
        )  # fmt: skip
        text = self.prepare_text(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guidance_scale, clip_skip,
            settings.num_images_per_prompt, long_prompt,
        )  # fmt: skip
        scheduler = self.resolve_scheduler(scheduler)
        scheduler.set_timesteps(settings.num_inference_steps, device=self.device)  # before init_noise_sigma
        height, width, generator = settings.height, settings.width, settings.generator
        latents = self.prepare_latents(text.batch, height, width, generator, latents)
        latents = denoise(
            self, latents * scheduler.init_noise_sigma, scheduler.timesteps, scheduler, text, guidance_scale,
            generator, callback_on_step_end, callback, progress,
        )  # fmt: skip
        images = self.postprocess(latents, output_type)
        return StableDiffusionPipelineOutput(images, None) if return_dict else (images, None)

    def resolve_scheduler(self, scheduler: str | SchedulerMixin | None) -> SchedulerMixin:
        """The scheduler of one call: the pipeline's (None), one built by name from the model's
        scheduler config ("ddim", "euler_a", ...), or the given object."""
        if scheduler is None:
            return self.scheduler
        return get_scheduler(scheduler, self.scheduler_config) if isinstance(scheduler, str) else scheduler

    def prepare_text(
        self,
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        guidance_scale: float,
        clip_skip: int | None,
        num_images_per_prompt: int,
        long_prompt: bool,
    ) -> TextConditioning:
        """The UNet's text input for a call: embeddings [negatives; prompts] repeated per image, and the
        padding mask when the model hides padding (see `__call__` for `long_prompt`)."""
        do_cfg = guidance_scale > 1.0
        embeds = (prompt_embeds, negative_prompt_embeds)
        if long_prompt:
            cond, uncond, mask = encode_long_prompt(self, prompt, negative_prompt, do_cfg, clip_skip, *embeds)
        else:
            cond, uncond = self.encode_prompt(prompt, negative_prompt, do_cfg, clip_skip, *embeds)
            mask = (
                self.text_attention_mask(prompt, negative_prompt, do_cfg, *embeds)
                if self.mask_text_padding
                else None
            )
        context = cond if uncond is None else torch.cat([uncond, cond])  # [2B, 77, 768]: [uncond; cond]
        context = context.repeat_interleave(num_images_per_prompt, dim=0)  # [u0, u0, u1, u1, c0, c0, ...]
        if mask is not None:
            mask = mask.repeat_interleave(num_images_per_prompt, dim=0)  # [2B, 77], ordered as context
        return TextConditioning(context, mask, cond.shape[0] * num_images_per_prompt)

    def predict_noise(
        self,
        latent_model_input: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        mask: torch.Tensor | None,
        step: int,
        num_steps: int,
    ) -> torch.Tensor:
        """The UNet's noise prediction at step `step` of `num_steps` ([2B or B, 4, h, w]); a pipeline
        that adds a condition to the UNet (ControlNet) overrides this one method."""
        return self.unet(
            latent_model_input, t, encoder_hidden_states=context, encoder_attention_mask=mask
        ).sample

    def postprocess(self, latents: torch.Tensor, output_type: str) -> list | np.ndarray | torch.Tensor:
        """Decode latents into images of `output_type` ("pt", "np" or "pil"); "latent" keeps them."""
        if output_type == "latent":
            return latents
        images = self.decode_latents(latents)  # [B, 3, H, W] in [0, 1]
        if output_type == "pt":
            return images
        images = images.permute(0, 2, 3, 1).float().cpu().numpy()  # [B, H, W, 3]
        return images if output_type == "np" else to_pil(images)

    @torch.inference_mode()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, 4, h, w] -> images [B, 3, fh, fw] in [0, 1]."""
        images = self.vae.decode(latents / self.vae.scaling_factor).sample  # [-1, 1]
        check_images(images)
        return (images / 2 + 0.5).clamp(0, 1)
