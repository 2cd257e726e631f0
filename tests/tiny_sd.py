"""A small random-weight Stable Diffusion with the v1.5 block structure, built with the reference
libraries (diffusers, transformers) and saved in the official diffusers layout, for tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from minisd.loading import sd15_config

SD15 = {n: sd15_config(n) for n in ("unet", "vae", "text_encoder", "scheduler")}
TINY_UNET = {
    **SD15["unet"],
    "block_out_channels": [32, 32, 64, 64],
    "cross_attention_dim": 32,
    "sample_size": 8,
}
TINY_VAE = {**SD15["vae"], "block_out_channels": [32, 32, 64, 64], "sample_size": 64}
TINY_TEXT = {
    **SD15["text_encoder"],
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
}


def randomize(model: torch.nn.Module, scale: float | None = None) -> torch.nn.Module:
    """Give every tensor distinct random values (so a swapped key cannot go unnoticed).

    With `scale`, weights are drawn around the default init (norm weights near 1) so activations
    stay in a sane range for end-to-end tests."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if scale is None:
                p.copy_(torch.randn_like(p))
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + scale * torch.randn_like(p))
            else:
                p.add_(scale * torch.randn_like(p))
    return model


def diffusers_components(unet=TINY_UNET, vae=TINY_VAE, text=TINY_TEXT, scale: float | None = None):
    """(unet, vae, text_encoder) reference models with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    conf = {k: v for k, v in text.items() if k not in ("architectures",)}
    return (
        randomize(UNet2DConditionModel.from_config(unet), scale).eval(),
        randomize(AutoencoderKL.from_config(vae), scale).eval(),
        randomize(CLIPTextModel(CLIPTextConfig(**conf)), scale).eval(),
    )


def save_diffusers_pipeline(
    folder: Path, scale: float | None = 0.05, dtype: torch.dtype = torch.float32, **configs
) -> Path:
    """Build a random-weight diffusers StableDiffusionPipeline and save_pretrained it to `folder`.

    `dtype=torch.float16` halves the files (the full-size v1.5 pipeline: 2 GB, not 4); both libraries
    then load the same rounded weights into float32 models (diffusers with dtype=torch.float32)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer as HFCLIPTokenizer

    from minisd.models.tokenizer import CLIPTokenizer

    unet, vae, text = diffusers_components(scale=scale, **configs)
    CLIPTokenizer().save_pretrained(folder / "tokenizer")
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=HFCLIPTokenizer.from_pretrained(folder / "tokenizer"),
        scheduler=PNDMScheduler.from_config(SD15["scheduler"]),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(dtype).save_pretrained(folder)
    return folder


def save_sd15_pipeline(folder: Path, **unet) -> Path:
    """The v1.5 configuration with random weights (scale 0.02) in float16; `unet` overrides its config."""
    return save_diffusers_pipeline(
        folder,
        scale=0.02,
        dtype=torch.float16,
        unet={**SD15["unet"], **unet},
        vae=SD15["vae"],
        text=SD15["text_encoder"],
    )


# Two loads of the same weights need not give bit-identical pictures: on one thread the CPU's matrix
# kernels can round differently depending on where in memory a weight lies (seen: 5e-6 on [0, 1]).
# So a conversion is proven by its weights, bit for bit, and its pictures agree to this tolerance.
SAME_WEIGHTS_ATOL = 1e-4


def weight_digests(pipe) -> dict[str, str]:
    """Dtype, shape and a hash of the bytes of every weight of the UNet, the autoencoder and the text
    encoder: two pipelines hold bit-identical weights when these are equal, and a full-size pipeline can
    be freed before the other is loaded."""
    digests = {}
    for name in ("unet", "vae", "text_encoder"):
        for key, t in getattr(pipe, name).state_dict().items():
            raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            digests[f"{name}.{key}"] = (
                f"{t.dtype} {tuple(t.shape)} {hashlib.blake2b(raw, digest_size=16).hexdigest()}"
            )
    return digests
