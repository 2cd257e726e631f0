"""The networks of Stable Diffusion v1.5, with diffusers' and transformers' names (chapters 01-05)."""

from minisd.models.clip import CLIPTextModel
from minisd.models.controlnet import ControlNetModel, MultiControlNetModel
from minisd.models.modeling_utils import ModelMixin
from minisd.models.tokenizer import CLIPTokenizer
from minisd.models.unet import UNet2DConditionModel
from minisd.models.vae import AutoencoderKL, DiagonalGaussianDistribution

__all__ = [
    "AutoencoderKL",
    "CLIPTextModel",
    "CLIPTokenizer",
    "ControlNetModel",
    "DiagonalGaussianDistribution",
    "ModelMixin",
    "MultiControlNetModel",
    "UNet2DConditionModel",
]
