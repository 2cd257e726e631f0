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
