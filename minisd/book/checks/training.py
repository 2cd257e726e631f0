"""Checkers for chapter 07's training exercises: the EMA update with its warm-up and the autoencoder's
latent scaling factor, each graded against the package (`minisd.training.EMA`,
`minisd.training.latent_scaling_factor`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minisd.book.checks.compare import compare_cases


def ema_update(candidate: Callable) -> bool:
    """Check `candidate(shadow, weight, n, decay) -> new shadow`: the EMA's `n`-th update (n counts this
    one) of a weight tensor, with the warm-up d = min(decay, (1 + n) / (10 + n)); against the package's
    `EMA` on a one-parameter model. `shadow` and `weight` must not be modified."""
    from minisd.training import EMA

    gen = torch.Generator().manual_seed(0)
    cases = [
        (label, (torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen), n, decay))
        for label, n, decay in [
            ("the first update (warm-up: d = 2/11)", 1, 0.999),
            ("update 50", 50, 0.999),
            ("update 5,000 (warm-up still below 0.999)", 5_000, 0.999),
            ("update 100,000 (d = decay)", 100_000, 0.999),
            ("update 300 with decay 0.99", 300, 0.99),
        ]
    ]

    def reference(shadow, weight, n, decay):
        model = torch.nn.Module()
        model.weight = torch.nn.Parameter(shadow.clone())
        ema = EMA(model, decay)
        ema.updates = n - 1
        model.weight.data.copy_(weight)
        ema.update(model)
        return ema.model.weight.detach()

    def checked(shadow, weight, n, decay):
        before = shadow.clone(), weight.clone()
        out = candidate(shadow, weight, n, decay)
        if not (torch.equal(shadow, before[0]) and torch.equal(weight, before[1])):
            raise ValueError("the inputs were modified in place: return a new tensor")
        return out

    return compare_cases("ema_update", checked, reference, cases)


def scaling_factor(candidate: Callable) -> bool:
    """Check `candidate(vae, images, generator) -> float`: 1 / the standard deviation of the latents of
    `images` [N, 3, H, W] in [-1, 1], the posterior sampled with `generator` (seeded 0), over all their
    numbers; against `latent_scaling_factor` on random tiny autoencoders."""
    from minisd.models.vae import AutoencoderKL
    from minisd.shapes import TINY_CONFIGS
    from minisd.training import latent_scaling_factor

    gen = torch.Generator().manual_seed(0)
    cases = []
    for label, n, seed in [("8 random pictures", 8, 0), ("20 pictures, another autoencoder", 20, 1)]:
        torch.manual_seed(seed)
        vae = AutoencoderKL.from_config(TINY_CONFIGS["vae"]).eval()
        images = torch.rand(n, 3, 32, 32, generator=gen) * 2 - 1
        cases.append((label, (vae, images, torch.Generator().manual_seed(0))))

    @torch.no_grad()
    def reference(vae, images, generator):
        return torch.tensor(latent_scaling_factor(vae, [(x,) for x in images]))

    @torch.no_grad()
    def checked(vae, images, generator):
        return torch.tensor(float(candidate(vae, images, generator)))

    return compare_cases("scaling_factor", checked, reference, cases)
