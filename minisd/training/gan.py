"""The adversarial part of the autoencoder's loss (chapter 05): a patch discriminator, its hinge loss,
and the adaptive weight that balances the generator's adversarial gradient against the
reconstruction gradient at the decoder's last layer (the LDM / taming-transformers recipe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """A PatchGAN: a small conv net that scores overlapping patches as real (> 0) or reconstructed (< 0).

    Two stride-2 convolutions then two stride-1 ones: a 32x32 image gives an 8x8 map of logits, each
    seeing a 26x26 patch. No normalisation layer, so a patch's score does not depend on the rest of
    the batch.
    """

    def __init__(self, in_channels: int = 3, channels: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),  # [B, C, H/2, W/2]
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),  # [B, 2C, H/4, W/4]
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 4 * channels, 3, padding=1),  # [B, 4C, H/4, W/4]
            nn.LeakyReLU(0.2),
            nn.Conv2d(4 * channels, 1, 3, padding=1),  # [B, 1, H/4, W/4]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, 3, H, W] -> logits [B, 1, H/4, W/4]


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean max(0, 1 - D(x)) + mean max(0, 1 + D(x_hat)): 2 when D outputs 0 everywhere (chance),
    0 once every real patch scores >= 1 and every reconstructed one <= -1. (taming halves it.)"""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def adaptive_weight(
    rec_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    disc_weight: float = 1.0,
    max_weight: float = 1e4,
) -> torch.Tensor:
    """lambda = |grad_w rec_loss| / (|grad_w g_loss| + 1e-4), clamped to [0, max_weight], detached,
    times `disc_weight`; w is `last_layer` (the decoder's last conv weight). With it the adversarial
    term pulls on the decoder exactly as hard as the reconstruction term (times disc_weight),
    however large D's logits grow. Both losses are 0-d tensors whose graphs are kept."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]  # shape of last_layer
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach() * disc_weight  # 0-d
