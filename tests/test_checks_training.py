"""Chapter 07's exercise checker passes a correct loss and fails known-wrong ones."""

import torch.nn.functional as F

from minisd.book import checks


def test_noise_prediction_loss_checker():
    def right(unet, x0, eps, t, context, alphas_cumprod):
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        return F.mse_loss(unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, context).sample, eps)

    def variance_not_std(unet, x0, eps, t, context, alphas_cumprod):
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        return F.mse_loss(unet(a * x0 + (1 - a) * eps, t, context).sample, eps)

    def predicts_the_image(unet, x0, eps, t, context, alphas_cumprod):
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        return F.mse_loss(unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, context).sample, x0)

    assert checks.noise_prediction_loss(right)
    assert not checks.noise_prediction_loss(variance_not_std)
    assert not checks.noise_prediction_loss(predicts_the_image)


def test_ema_update_checker():
    def right(shadow, weight, n, decay):
        d = min(decay, (1 + n) / (10 + n))
        return d * shadow + (1 - d) * weight

    def no_warm_up(shadow, weight, n, decay):
        return decay * shadow + (1 - decay) * weight

    def weights_swapped(shadow, weight, n, decay):
        d = min(decay, (1 + n) / (10 + n))
        return (1 - d) * shadow + d * weight

    def in_place(shadow, weight, n, decay):
        d = min(decay, (1 + n) / (10 + n))
        return shadow.mul_(d).add_((1 - d) * weight)

    assert checks.ema_update(right)
    assert not checks.ema_update(no_warm_up)
    assert not checks.ema_update(weights_swapped)
    assert not checks.ema_update(in_place)


def test_scaling_factor_checker():
    def right(vae, images, generator):
        return 1 / vae.encode(images).latent_dist.sample(generator).std().item()

    def the_mean_not_a_sample(vae, images, generator):
        return 1 / vae.encode(images).latent_dist.mean.std().item()

    def one_over_variance(vae, images, generator):
        return 1 / vae.encode(images).latent_dist.sample(generator).var().item()

    assert checks.scaling_factor(right)
    assert not checks.scaling_factor(the_mean_not_a_sample)
    assert not checks.scaling_factor(one_over_variance)
