"""The networks of Stable Diffusion v1.5, with diffusers' and transformers' names (chapters 01-05),
ControlNet, and CLIP's image tower for measuring pictures."""

from minisd.models.clip import CLIPTextModel
from minisd.models.clip_vision import CLIPModel, CLIPVisionModel
from minisd.models.controlnet import ControlNetModel, MultiControlNetModel
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
    "ControlNetModel",
    "DiagonalGaussianDistribution",
    "ModelMixin",
    "MultiControlNetModel",
    "UNet2DConditionModel",
]
