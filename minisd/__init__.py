"""minisd: Stable Diffusion v1.5 built from scratch, one chapter per part.

    import minisd
    pipe = minisd.StableDiffusionPipeline.from_pretrained("stable-diffusion-v1-5")  # or a .safetensors
    image = pipe("a photograph of an astronaut riding a horse").images[0]

The parts carry diffusers' and transformers' names, so the official weights load with no renaming.
"""

from minisd.device import get_device
from minisd.models.clip import CLIPTextModel
from minisd.models.clip_vision import CLIPModel, CLIPVisionModel
from minisd.models.controlnet import ControlNetModel, MultiControlNetModel
from minisd.models.tokenizer import CLIPTokenizer
from minisd.models.unet import UNet2DConditionModel
from minisd.models.vae import AutoencoderKL, DiagonalGaussianDistribution
from minisd.pipelines import (
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)
from minisd.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    get_scheduler,
)

__all__ = [
    "AutoencoderKL",
    "CLIPModel",
    "CLIPTextModel",
    "CLIPTokenizer",
    "CLIPVisionModel",
    "ControlNetModel",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "DiagonalGaussianDistribution",
    "EulerAncestralDiscreteScheduler",
    "EulerDiscreteScheduler",
    "LMSDiscreteScheduler",
    "MultiControlNetModel",
    "PNDMScheduler",
    "StableDiffusionControlNetPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
    "StableDiffusionPipeline",
    "UNet2DConditionModel",
    "get_device",
    "get_scheduler",
]
