"""Checkers for chapter 05's autoencoder exercises: the cross-fade of two overlapping tiles, the latent
shape a VAE config gives, and the adaptive weight of the adversarial loss, each graded against the
package (`blend_seam`, `AutoencoderKL`, `adaptive_weight`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minisd.book.checks.compare import compare_cases

SD15_BLOCKS = [128, 256, 512, 512]


def tile_blend(candidate: Callable) -> bool:
    """Check `candidate(a, b, extent, dim) -> tile`: tile `b` with its first `extent` rows (dim=2) or
    columns (dim=3) cross-faded into the last ones of its neighbour `a` (above or to the left), the
    weight of b rising linearly from 0 by 1/extent per row; `a` and `b` must not be modified."""
    from minisd.models.vae_tiling import blend_seam

    gen = torch.Generator().manual_seed(0)
    cases = []
    for label, shape, extent, dim in [
        ("rows, extent 4", (1, 3, 8, 8), 4, 2),
        ("columns, extent 4", (1, 3, 8, 8), 4, 3),
        ("columns, extent 1 (b's first column is a's last)", (2, 3, 6, 6), 1, 3),
        ("rows, a shorter tile than extent", (1, 4, 3, 8), 5, 2),
        ("no overlap (extent 0)", (1, 3, 4, 4), 0, 3),
    ]:
        a, b = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        cases.append((label, (a, b, extent, dim)))

    def checked(a, b, extent, dim):
        a0, b0 = a.clone(), b.clone()
        out = candidate(a, b, extent, dim)
        if not (torch.equal(a, a0) and torch.equal(b, b0)):
            raise ValueError("the inputs were modified in place")
        return out

    return compare_cases("tile_blend", checked, blend_seam, cases)


def latent_shape(candidate: Callable) -> bool:
    """Check `candidate(config, height, width) -> (channels, h, w)`: the shape of one image's latent
    from an AutoencoderKL config dict (its block_out_channels and latent_channels), against the
    package's encoder on an actual image (tiny widths, the same number of blocks)."""
    from minisd.models.vae import AutoencoderKL

    cases = []
    for label, blocks, channels, (height, width) in [
        ("SD v1.5, 512 x 512", SD15_BLOCKS, 4, (512, 512)),
        ("SD v1.5, 768 x 512 (portrait)", SD15_BLOCKS, 4, (768, 512)),
        ("the chapter's f = 4 model, 32 x 32", [16, 32, 32], 4, (32, 32)),
        ("five blocks, 16 latent channels, 64 x 96", [128, 256, 512, 512, 512], 16, (64, 96)),
        ("one block (no downsampling), 8 x 16", [64], 4, (8, 16)),
    ]:
        config = {"block_out_channels": blocks, "latent_channels": channels, "layers_per_block": 1}
        cases.append((label, (config, height, width)))

    def reference(config, height, width):
        n = len(config["block_out_channels"])
        tiny = {  # the same structure with 8-channel blocks, so the real encoder runs in milliseconds
            "block_out_channels": [8] * n,
            "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n,
            "latent_channels": config["latent_channels"],
            "layers_per_block": 1,
            "norm_num_groups": 4,
        }
        with torch.no_grad():
            z = AutoencoderKL.from_config(tiny).encode(torch.zeros(1, 3, height, width)).latent_dist.mean
        return tuple(z.shape[1:])

    return compare_cases("latent_shape", lambda *args: tuple(candidate(*args)), reference, cases)


def adaptive_gan_weight(candidate: Callable) -> bool:
    """Check `candidate(rec_grad, g_grad, disc_weight) -> weight`: the adaptive weight of the adversarial
    loss from the two gradients at the decoder's last layer (the norm ratio with 1e-4 in the
    denominator, clamped to [0, 1e4], times disc_weight) against `adaptive_weight`."""
    from minisd.training.gan import adaptive_weight

    gen = torch.Generator().manual_seed(0)
    cases = []
    for label, scale_rec, scale_g, disc_weight in [
        ("comparable gradients", 1.0, 1.0, 1.0),
        ("a strong discriminator, disc_weight 0.5", 0.01, 3.0, 0.5),
        ("a weak discriminator: the ratio is large", 1.0, 1e-3, 1.0),
        ("tiny gradients: the 1e-4 matters", 1e-4, 1e-4, 0.8),
        ("no adversarial gradient: clamped to 1e4", 5.0, 0.0, 1.0),
    ]:
        rec_grad = torch.randn(3, 16, 3, 3, generator=gen) * scale_rec
        g_grad = torch.randn(3, 16, 3, 3, generator=gen) * scale_g
        cases.append((label, (rec_grad, g_grad, disc_weight)))

    def reference(rec_grad, g_grad, disc_weight):
        # losses whose gradients with respect to w are exactly rec_grad and g_grad
        w = torch.zeros_like(rec_grad, requires_grad=True)
        return adaptive_weight((w * rec_grad).sum(), (w * g_grad).sum(), w, disc_weight)

    return compare_cases("adaptive_gan_weight", candidate, reference, cases)
