"""Checkers for chapters 01-07: tokenizer, text encoder, schedulers, autoencoder, training (the UNet's are
in checks/unet.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minisd.book.checks.compare import compare_cases

# Chapter 01: the BPE tokenizer ------------------------------------------------------------------


def bpe_merge(candidate: Callable[[str, dict], list[str]], tokenizer=None) -> bool:
    """Check a `bpe(word, ranks) -> symbols` on a toy merge table and on CLIP's 48,894 merges."""
    from minisd.models.tokenizer import CLIPTokenizer, bpe, byte_encode

    toy = {("l", "o"): 0, ("lo", "w</w>"): 1, ("e", "r</w>"): 2, ("lo", "w"): 3, ("a", "a"): 4}
    cases = [(f"toy merges: {w!r}", (w, toy)) for w in ["low", "lower", "aaaaa", "x", "wol"]]
    ranks = (tokenizer or CLIPTokenizer()).ranks
    words = ["a", "astronaut", "horse", "masterpiece", "8", "!!!", "unbelievably", "café", "東京", "🐱🚀"]
    cases += [(f"CLIP merges: {w!r}", (byte_encode(w), ranks)) for w in words]
    return compare_cases("bpe_merge", candidate, bpe, cases)


def ddim_step(candidate: Callable) -> bool:
    """Chapter 03: `candidate(model_output, sample, alpha_bar_t, alpha_bar_prev) -> x_prev`, a deterministic
    (eta = 0) DDIM step with epsilon prediction, against `minisd.schedulers.DDIMScheduler.step` run
    with SD v1.5's scheduler config (first, middle and last step of a 50-step schedule)."""
    from minisd.schedulers import DDIMScheduler

    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    scheduler = DDIMScheduler(**config, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    scheduler.set_timesteps(50)
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    gen = torch.Generator().manual_seed(0)
    cases = []
    for label, t, shape in [
        ("t=981", 981, (1, 4, 8, 8)),
        ("t=501, batch", 501, (2, 4, 8, 8)),
        ("t=1, last", 1, (3,)),
    ]:
        eps, x = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        prev = t - stride
        alpha_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        cases.append((label, (eps, x, scheduler.alphas_cumprod[t], alpha_prev, t)))
    cases.append(
        ("eps = 0", (torch.zeros(4), torch.ones(4), scheduler.alphas_cumprod[501], cases[1][1][3], 501))
    )

    def reference(eps, x, alpha_t, alpha_prev, t):
        return scheduler.step(eps, t, x).prev_sample

    def reader(eps, x, alpha_t, alpha_prev, t):
        return candidate(eps, x, alpha_t, alpha_prev)

    return compare_cases("ddim_step", reader, reference, cases)


# Chapter 06: the Stable Diffusion pipeline ------------------------------------------------------


def input_block_index(candidate: Callable[[int, int, int], int]) -> bool:
    """Chapter 06: `candidate(i, j, layers_per_block) -> k`, the original `input_blocks.k` that holds
    diffusers' `down_blocks.i.resnets.j`, against minisd.loading.key_maps (v1.5: 2 layers per block)."""
    from minisd.loading.key_maps import unet_blocks

    def reference(i: int, j: int, per: int) -> int:
        config = {"layers_per_block": per, "block_out_channels": [0] * 4}
        config |= {"down_block_types": ["CrossAttnDownBlock2D"] * 4, "up_block_types": ["UpBlock2D"] * 4}
        original = dict((d, o) for d, o, _ in unet_blocks(config))[f"down_blocks.{i}.resnets.{j}"]
        return int(original.split(".")[1])

    picks = [(i, j, 2) for i in range(4) for j in range(2)] + [(1, 0, 1), (3, 0, 1), (1, 2, 3), (3, 1, 3)]
    cases = [(f"down_blocks.{i}.resnets.{j}, {per} per block", (i, j, per)) for i, j, per in picks]
    return compare_cases("input_block_index", candidate, reference, cases)


# Chapter 05: the KL autoencoder -----------------------------------------------------------------


def _gaussian_cases() -> list[tuple[str, tuple]]:
    gen = torch.Generator().manual_seed(0)
    shape = (2, 4, 8, 8)
    mean, logvar, eps = (torch.randn(shape, generator=gen) for _ in range(3))
    return [
        ("random mean / logvar", (mean, logvar, eps)),
        ("standard normal (mean 0, logvar 0)", (torch.zeros(shape), torch.zeros(shape), eps)),
        ("logvar below -30 is clamped", (mean, torch.full(shape, -50.0), eps)),
        ("logvar above 20 is clamped", (mean[:1], torch.full((1, 4, 8, 8), 25.0), eps[:1])),
        ("one example, 4x6 latents", (mean[:1, :, :4, :6], logvar[:1, :, :4, :6], eps[:1, :, :4, :6])),
    ]


def diagonal_gaussian_sample(candidate: Callable) -> bool:
    """Chapter 05: `candidate(mean, logvar, eps) -> z`, the reparameterised sample mean + std * eps with
    logvar clamped to [-30, 20], against `minisd.models.vae.DiagonalGaussianDistribution`."""
    from minisd.models.vae import DiagonalGaussianDistribution

    def reference(mean, logvar, eps):
        post = DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1))
        return post.mean + post.std * eps

    return compare_cases("diagonal_gaussian_sample", candidate, reference, _gaussian_cases())


def diagonal_gaussian_kl(candidate: Callable) -> bool:
    """Chapter 05: `candidate(mean, logvar) -> kl [B]`, KL(N(mean, exp(logvar)) || N(0, I)) summed over
    channels and positions (logvar clamped to [-30, 20]), against `DiagonalGaussianDistribution.kl`."""
    from minisd.models.vae import DiagonalGaussianDistribution

    def reference(mean, logvar):
        return DiagonalGaussianDistribution(torch.cat([mean, logvar], dim=1)).kl()

    cases = [(label, args[:2]) for label, args in _gaussian_cases()]
    return compare_cases("diagonal_gaussian_kl", candidate, reference, cases, rtol=1e-4, atol=1e-3)


# Chapter 07: training a tiny text-to-image model ------------------------------------------------


def noise_prediction_loss(candidate: Callable) -> bool:
    """Chapter 07: `candidate(unet, latents, noise, t, context, alphas_cumprod) -> loss`, the training
    loss of one step (noise the latents to x_t, predict the noise, mean squared error), against
    `minisd.schedulers.DDPMScheduler.add_noise` and `F.mse_loss` with the tiny model's UNet."""
    import torch.nn.functional as F

    from minisd.models.unet import UNet2DConditionModel
    from minisd.schedulers import DDPMScheduler
    from minisd.shapes import TINY_CONFIGS

    scheduler = DDPMScheduler.from_config(TINY_CONFIGS["scheduler"])
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(TINY_CONFIGS["unet"]).eval()
    gen = torch.Generator().manual_seed(0)
    cases = []
    for label, t in [
        ("one timestep each", torch.tensor([0, 250, 500, 999])),
        ("all at t=999", torch.full((4,), 999)),
    ]:
        latents, noise = torch.randn(4, 4, 8, 8, generator=gen), torch.randn(4, 4, 8, 8, generator=gen)
        context = torch.randn(4, 77, TINY_CONFIGS["unet"]["cross_attention_dim"], generator=gen)
        cases.append((label, (unet, latents, noise, t, context, scheduler.alphas_cumprod)))

    @torch.no_grad()
    def reference(unet, latents, noise, t, context, alphas_cumprod):
        return F.mse_loss(unet(scheduler.add_noise(latents, noise, t), t, context).sample, noise)

    return compare_cases("noise_prediction_loss", torch.no_grad()(candidate), reference, cases)
