"""Pipelines: models and a scheduler put together, with diffusers' names and call arguments (chapter 06;
image-to-image and inpainting: chapter 10)."""

from minisd.pipelines.controlnet import StableDiffusionControlNetPipeline
from minisd.pipelines.image_processing import (
    apply_overlay,
    blur_mask,
    preprocess_image,
    preprocess_mask,
    to_pil,
)
from minisd.pipelines.img2img import StableDiffusionImg2ImgPipeline, strength_timesteps
from minisd.pipelines.inpaint import StableDiffusionInpaintPipeline
from minisd.pipelines.long_prompt import encode_long_prompts
from minisd.pipelines.prompt_parser import parse_prompt_attention
from minisd.pipelines.sampling import classifier_free_guidance
from minisd.pipelines.stable_diffusion import StableDiffusionPipeline

__all__ = [
    "StableDiffusionControlNetPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
    "StableDiffusionPipeline",
    "apply_overlay",
    "blur_mask",
    "classifier_free_guidance",
    "encode_long_prompts",
    "parse_prompt_attention",
    "preprocess_image",
    "preprocess_mask",
    "strength_timesteps",
    "to_pil",
]
