"""The networks of Stable Diffusion v1.5, with diffusers' and transformers' names (chapters 01-05),
and CLIP's image tower for measuring pictures (chapter 12)."""

from minisd.models.clip import CLIPTextModel
from minisd.models.clip_vision import CLIPModel, CLIPVisionModel
from minisd.models.modeling_utils import ModelMixin
from minisd.models.tokenizer import CLIPTokenizer
from minisd.models.unet import UNet2DConditionModel
from minisd.models.vae import AutoencoderKL, DiagonalGaussianDistribution

__all__ = [
    "AutoencoderKL",
    "CLIPModel",
    "CLIPTextModel",
    "CLIPTokenizer",
    "CLIPVisionModel",
    "DiagonalGaussianDistribution",
    "ModelMixin",
    "UNet2DConditionModel",
]
