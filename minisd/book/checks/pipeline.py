"""Checkers for chapter 06's exercises on the whole pipeline: the sampling loop with a negative prompt and
any sampler, the number of UNet evaluations a call costs, and pictures -> latents. Graded on the book's
tiny trained model (32x32 pixels, f = 4, its own scaling factor), so answers that hard-code SD v1.5's
numbers fail."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache

import torch

from minisd.book.checks.compare import compare_cases


@cache
def _tiny_pipeline():
    from minisd.pipelines import StableDiffusionPipeline
    from minisd.shapes import tiny_model_path

    return StableDiffusionPipeline.from_pretrained(tiny_model_path(), device="cpu")


def sampling_loop(candidate: Callable) -> bool:
    """Check `candidate(pipe, prompt, negative_prompt, scheduler, num_inference_steps, guidance_scale,
    generator) -> latents [1, 4, h, w]`: the denoising loop written by hand (initial noise from the
    generator, CFG with the negative prompt in the unconditional half, any sampler; `scheduler` is a
    fresh scheduler object), against `pipe(..., output_type="latent")` on the tiny model."""
    from minisd.schedulers import get_scheduler

    pipe = _tiny_pipeline()
    prompt = "a red circle above a green square on a white background"
    settings = [
        ("euler, negative 'red'", "euler", "red", 8, 4.0),
        ("ddim, no negative prompt", "ddim", None, 6, 3.0),
        ("lms, negative 'a blue square'", "lms", "a blue square", 6, 5.0),
        ("dpm++2m, guidance 1 (no CFG)", "dpm++2m", None, 5, 1.0),
        ("euler_a: the sampler draws noise too", "euler_a", "yellow", 6, 3.0),
    ]

    def args(name, negative, steps, scale, seed):
        scheduler = get_scheduler(name, pipe.scheduler_config)  # a fresh one per call
        return pipe, prompt, negative, scheduler, steps, scale, torch.Generator().manual_seed(seed)

    def reference(pipe, prompt, negative, scheduler, steps, scale, generator):
        return pipe(
            prompt,
            negative_prompt=negative,
            scheduler=scheduler,
            num_inference_steps=steps,
            guidance_scale=scale,
            generator=generator,
            output_type="latent",
            progress=False,
        ).images

    def run(use: Callable) -> Callable:
        def call(name, negative, steps, scale, seed):
            with torch.inference_mode():
                return use(*args(name, negative, steps, scale, seed))

        return call

    cases = [
        (label, (name, negative, steps, scale, seed))
        for seed, (label, name, negative, steps, scale) in enumerate(settings)
    ]
    return compare_cases("sampling_loop", run(candidate), run(reference), cases, atol=1e-4, rtol=1e-3)


def unet_evaluations(candidate: Callable[[str, int, float, int], int]) -> bool:
    """Check `candidate(scheduler_name, num_inference_steps, guidance_scale, num_images) -> int`: how many
    noise predictions the UNet computes in one pipeline call (each latent of each UNet batch counts one)
    with SD v1.5's scheduler config, against a count taken while the pipeline's loop runs (the UNet
    replaced by a stand-in that counts and predicts zeros: the count depends on the sampler and the
    guidance, not on the model)."""
    from minisd.loading.configs import read_configs
    from minisd.schedulers import get_scheduler

    counting = copy.copy(_tiny_pipeline())

    def reference(name: str, steps: int, scale: float, images: int) -> int:
        rows = []

        def predict_noise(latent_model_input, *rest):
            rows.append(latent_model_input.shape[0])
            return torch.zeros_like(latent_model_input)

        counting.predict_noise = predict_noise
        scheduler = get_scheduler(name, read_configs()["scheduler"])
        counting(
            "a blue circle",
            num_inference_steps=steps,
            guidance_scale=scale,
            num_images_per_prompt=images,
            scheduler=scheduler,
            output_type="latent",
            progress=False,
        )
        return sum(rows)

    picks = [
        ("pndm", 50, 7.5, 1),
        ("ddim", 50, 7.5, 1),
        ("pndm", 20, 1.0, 1),
        ("euler_a", 30, 3.0, 4),
        ("dpm++2m", 25, 1.0, 2),
        ("pndm", 10, 0.5, 3),
        ("ddim", 10, 1.5, 2),
        ("lms", 12, 7.5, 3),
    ]
    cases = [
        (f"{name}, {steps} steps, guidance {scale}, {images} image(s)", (name, steps, scale, images))
        for name, steps, scale, images in picks
    ]
    return compare_cases("unet_evaluations", candidate, reference, cases)


def image_latents(candidate: Callable) -> bool:
    """Check `candidate(vae, images) -> latents`: pictures [B, 3, H, W] in [0, 1] to the latents the UNet
    works on (the mean of the encoder's distribution, scaled), as image-to-image starts from them; on the
    tiny model's autoencoder (f = 4) and on a small random one with SD's f = 8 and 0.18215."""
    from minisd.models.vae import AutoencoderKL

    def reference(vae, images):
        with torch.inference_mode():
            return vae.encode(images * 2 - 1).latent_dist.mean * vae.scaling_factor

    torch.manual_seed(0)
    sd_like = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    tiny = _tiny_pipeline().vae
    gen = torch.Generator().manual_seed(0)
    cases = [
        ("tiny model, two pictures", (tiny, torch.rand(2, 3, 32, 32, generator=gen))),
        ("tiny model, 48x32", (tiny, torch.rand(1, 3, 48, 32, generator=gen))),
        ("tiny model, a white picture", (tiny, torch.ones(1, 3, 32, 32))),
        ("SD-like autoencoder, f = 8", (sd_like.eval(), torch.rand(2, 3, 64, 64, generator=gen))),
    ]

    def guarded(vae, images):
        with torch.inference_mode():
            return candidate(vae, images.clone())

    return compare_cases("image_latents", guarded, reference, cases, atol=1e-4, rtol=1e-3)
