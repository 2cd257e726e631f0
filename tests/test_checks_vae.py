"""The chapter 05 checkers pass the reference and fail known-wrong versions."""

import torch

from minisd.book import checks


def sample(mean, logvar, eps):
    return mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps


def kl(mean, logvar):
    logvar = logvar.clamp(-30, 20)
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3))


def test_sample_checker_passes_the_reference(capsys):
    assert checks.diagonal_gaussian_sample(sample)
    assert "all passed" in capsys.readouterr().out


def test_sample_checker_fails_wrong_versions(capsys):
    assert not checks.diagonal_gaussian_sample(
        lambda m, lv, e: m + lv.clamp(-30, 20).exp() * e
    )  # var, not std
    assert not checks.diagonal_gaussian_sample(lambda m, lv, e: m + torch.exp(0.5 * lv) * e)  # no clamp
    assert not checks.diagonal_gaussian_sample(lambda m, lv, e: 1 / 0)  # raises: reported, not raised
    assert "FAIL" in capsys.readouterr().out


def test_kl_checker_passes_the_reference():
    assert checks.diagonal_gaussian_kl(kl)


def test_kl_checker_fails_wrong_versions():
    assert not checks.diagonal_gaussian_kl(lambda m, lv: kl(m, lv) * 2)  # forgot the 1/2
    assert not checks.diagonal_gaussian_kl(lambda m, lv: kl(m, lv).mean())  # not per example
    assert not checks.diagonal_gaussian_kl(  # no clamp
        lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).sum(dim=(1, 2, 3))
    )
    assert not checks.diagonal_gaussian_kl(  # mean over positions instead of sum
        lambda m, lv: 0.5 * (m**2 + lv.clamp(-30, 20).exp() - 1 - lv.clamp(-30, 20)).mean(dim=(1, 2, 3))
    )


def blend(a, b, extent, dim):
    extent = min(extent, a.shape[dim], b.shape[dim])
    if extent == 0:
        return b
    shape = [1, 1, 1, 1]
    shape[dim] = extent
    w = (torch.arange(extent) / extent).view(shape)
    out = b.clone()
    tail_of_a = a.narrow(dim, a.shape[dim] - extent, extent)
    out.narrow(dim, 0, extent).copy_(tail_of_a * (1 - w) + b.narrow(dim, 0, extent) * w)
    return out


def test_tile_blend_checker_passes_the_reference():
    assert checks.tile_blend(blend)


def test_tile_blend_checker_fails_wrong_versions(capsys):
    def ramp(weights):
        def candidate(a, b, extent, dim):
            extent = min(extent, a.shape[dim], b.shape[dim])
            if extent == 0:
                return b
            shape = [1, 1, 1, 1]
            shape[dim] = extent
            w = weights(extent).view(shape)
            out = b.clone()
            out.narrow(dim, 0, extent).copy_(
                a.narrow(dim, a.shape[dim] - extent, extent) * (1 - w) + b.narrow(dim, 0, extent) * w
            )
            return out

        return candidate

    assert not checks.tile_blend(ramp(lambda n: torch.linspace(0, 1, n)))  # reaches 1: off by one
    assert not checks.tile_blend(ramp(lambda n: 1 - torch.arange(n) / n))  # fades the wrong way
    assert not checks.tile_blend(ramp(lambda n: torch.full((n,), 0.5)))  # a flat average

    def first_rows_of_a(a, b, extent, dim):  # blends a's first rows instead of its last
        return blend(a.flip(dim), b, extent, dim)

    assert not checks.tile_blend(first_rows_of_a)

    def in_place(a, b, extent, dim):  # right numbers, but overwrites the caller's tile
        out = blend(a, b, extent, dim)
        b.copy_(out)
        return b

    assert not checks.tile_blend(in_place)
    assert "FAIL" in capsys.readouterr().out


def latent(config, height, width):
    f = 2 ** (len(config["block_out_channels"]) - 1)
    return config["latent_channels"], height // f, width // f


def test_latent_shape_checker_passes_the_reference():
    assert checks.latent_shape(latent)


def test_latent_shape_checker_fails_wrong_versions():
    def halving_in_every_block(c, h, w):  # the last block halves too
        f = 2 ** len(c["block_out_channels"])
        return c["latent_channels"], h // f, w // f

    assert not checks.latent_shape(halving_in_every_block)
    assert not checks.latent_shape(lambda c, h, w: (4, *latent(c, h, w)[1:]))  # always 4 channels
    assert not checks.latent_shape(lambda c, h, w: latent(c, w, h))  # height and width swapped
    assert not checks.latent_shape(lambda c, h, w: (c["latent_channels"], h // 8, w // 8))  # v1.5's f only
    assert not checks.latent_shape(  # mean and log-variance counted as channels
        lambda c, h, w: (2 * c["latent_channels"], *latent(c, h, w)[1:])
    )


def weight(rec_grad, g_grad, disc_weight):
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, 1e4) * disc_weight


def test_adaptive_gan_weight_checker_passes_the_reference():
    assert checks.adaptive_gan_weight(weight)


def test_adaptive_gan_weight_checker_fails_wrong_versions():
    assert not checks.adaptive_gan_weight(lambda r, g, d: weight(g, r, d))  # the ratio upside down
    assert not checks.adaptive_gan_weight(lambda r, g, d: (r.norm() / (g.norm() + 1e-4)) * d)  # no clamp
    assert not checks.adaptive_gan_weight(lambda r, g, d: (r.norm() / g.norm()).clamp(0, 1e4) * d)  # no 1e-4
    assert not checks.adaptive_gan_weight(  # squared norms
        lambda r, g, d: (r.pow(2).sum() / (g.pow(2).sum() + 1e-4)).clamp(0, 1e4) * d
    )
    assert not checks.adaptive_gan_weight(lambda r, g, d: weight(r, g, 1.0))  # disc_weight forgotten
    assert not checks.adaptive_gan_weight(  # mean absolute gradients instead of norms
        lambda r, g, d: (r.abs().mean() / (g.abs().mean() + 1e-4)).clamp(0, 1e4) * d
    )
