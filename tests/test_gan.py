"""The adversarial loss pieces of chapter 05: hinge loss values, the adaptive weight, the discriminator."""

import torch
from torch import nn

from minisd.training.gan import PatchDiscriminator, adaptive_weight, hinge_d_loss


def test_hinge_loss_at_known_points():
    zeros = torch.zeros(2, 1, 4, 4)
    assert hinge_d_loss(zeros, zeros).item() == 2.0  # chance: D outputs 0 everywhere
    assert hinge_d_loss(zeros + 1.5, zeros - 3.0).item() == 0.0  # every patch beyond its margin
    assert torch.isclose(hinge_d_loss(zeros + 0.5, zeros - 0.25), torch.tensor(0.5 + 0.75))
    assert hinge_d_loss(zeros - 1, zeros + 1).item() == 4.0  # the wrong way round


def test_adaptive_weight_is_the_gradient_norm_ratio_on_a_toy_decoder():
    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))
    disc = PatchDiscriminator(channels=8)
    z, x = torch.randn(2, 4, 16, 16), torch.randn(2, 3, 16, 16)
    x_hat = decoder(z)
    rec = (x - x_hat).abs().mean()
    g = -disc(x_hat).mean()
    last = decoder[2].weight
    rec_grad = torch.autograd.grad(rec, last, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g, last, retain_graph=True)[0]
    by_hand = rec_grad.flatten().pow(2).sum().sqrt() / (g_grad.flatten().pow(2).sum().sqrt() + 1e-4)
    weight = adaptive_weight(rec, g, last, disc_weight=0.5)
    assert not weight.requires_grad and weight.shape == ()
    assert torch.isclose(weight, 0.5 * by_hand, rtol=1e-5)
    # the graph is kept: the losses can still be backpropagated
    (rec + weight * g).backward()
    assert decoder[0].weight.grad is not None


def test_adaptive_weight_is_clamped_when_the_discriminator_gives_no_gradient():
    w = torch.ones(3, requires_grad=True)
    rec = (w * torch.tensor([3.0, 4.0, 0.0])).sum()  # gradient norm 5
    g = (w * 0.0).sum()  # no adversarial gradient
    assert adaptive_weight(rec, g, w).item() == 1e4  # 5 / 1e-4 = 5e4, clamped
    equal_norm = (w * 5.0 / 3**0.5).sum()  # gradient norm 5 too
    assert abs(adaptive_weight(rec, equal_norm, w).item() - 5 / (5 + 1e-4)) < 1e-6


def test_patch_discriminator_scores_patches():
    disc = PatchDiscriminator()
    assert disc(torch.randn(3, 3, 32, 32)).shape == (3, 1, 8, 8)
    assert disc(torch.randn(1, 3, 64, 48)).shape == (1, 1, 16, 12)
