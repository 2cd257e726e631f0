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
