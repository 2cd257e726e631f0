"""Pipelines: models and a scheduler put together, with diffusers' names and call arguments (chapter 06)."""

from minisd.pipelines.controlnet import StableDiffusionControlNetPipeline
from minisd.pipelines.image_processing import to_pil
from minisd.pipelines.long_prompt import encode_long_prompts
from minisd.pipelines.prompt_parser import parse_prompt_attention
from minisd.pipelines.stable_diffusion import StableDiffusionPipeline, classifier_free_guidance

__all__ = [
    "StableDiffusionControlNetPipeline",
    "StableDiffusionPipeline",
    "classifier_free_guidance",
    "encode_long_prompts",
    "parse_prompt_attention",
    "to_pil",
]
