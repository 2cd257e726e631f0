"""Chapter 10's exercise checkers pass correct answers written independently and fail plausible wrong ones."""

import math

import pytest
import torch
import torch.nn.functional as F

from minisd.book import checks


def steps_right(timesteps, strength):
    k = min(int(len(timesteps) * strength), len(timesteps))
    return timesteps[len(timesteps) - k :]


STEPS_WRONG = {
    "rounds": lambda t, s: t[len(t) - round(len(t) * s) :],
    "ceil": lambda t, s: t[len(t) - math.ceil(len(t) * s) :],
    "first k steps (the noisiest end)": lambda t, s: t[: int(len(t) * s)],
    "one step too many": lambda t, s: t[max(0, len(t) - int(len(t) * s) - 1) :],
}


def mask_right(mask, factor):
    binary = torch.where(mask >= 0.5, 1.0, 0.0)
    return binary[:, :, ::factor, ::factor]  # nearest neighbour at scale 1/f is the block's top-left pixel


MASK_WRONG = {
    "average pooling, then threshold": lambda m, f: (F.avg_pool2d(m, f) >= 0.5).float(),
    "max pooling (a dilated mask)": lambda m, f: F.max_pool2d((m >= 0.5).float(), f),
    "not binarised": lambda m, f: F.interpolate(m, scale_factor=1 / f),
    "0.5 kept": lambda m, f: F.interpolate((m > 0.5).float(), scale_factor=1 / f),
    "bilinear": lambda m, f: (F.interpolate(m, scale_factor=1 / f, mode="bilinear") >= 0.5).float(),
}


def blend_right(x, known, noise, mask, scheduler, next_t):
    if next_t is None:
        target = known
    else:
        a = scheduler.alphas_cumprod[next_t].reshape(-1, 1, 1, 1)
        target = a.sqrt() * known + (1 - a).sqrt() * noise
    return torch.where(mask > 0.5, x, target)


BLEND_WRONG = {
    "mask inverted": lambda x, k, n, m, s, t: blend_right(x, k, n, 1 - m, s, t),
    "input never noised": lambda x, k, n, m, s, t: blend_right(x, k, n, m, s, None),
    "noised after the last step too": lambda x, k, n, m, s, t: (
        blend_right(x, k, n, m, s, t) if t is not None else blend_right(x, k, n, m, s, torch.tensor([1]))
    ),
    "latents noised instead": lambda x, k, n, m, s, t: (
        (1 - m) * k + m * (x if t is None else s.add_noise(x, n, t))
    ),
}


@pytest.mark.parametrize(
    "checker, right, wrongs",
    [
        (checks.strength_steps, steps_right, STEPS_WRONG),
        (checks.latent_mask, mask_right, MASK_WRONG),
        (checks.blend_known, blend_right, BLEND_WRONG),
    ],
    ids=["strength_steps", "latent_mask", "blend_known"],
)
def test_checker_accepts_right_and_rejects_wrong(checker, right, wrongs, capsys):
    assert checker(right)
    for name, wrong in wrongs.items():
        assert not checker(wrong), name
    assert "FAIL" in capsys.readouterr().out
