"""The chapter 03 sampler-step checkers pass the derivations and reject plausible wrong ones."""

import pytest
import torch

from minisd.book import checks


def euler(eps, x, alpha_bar_t, alpha_bar_next, sigma_of=lambda a: ((1 - a) / a) ** 0.5, sign=1.0):
    sigma, sigma_next = sigma_of(alpha_bar_t), sigma_of(alpha_bar_next)
    x0_hat = x - sigma * eps  # x = x0 + sigma eps in Euler's variable
    return x + sign * (sigma_next - sigma) * (x - x0_hat) / sigma


def test_euler_step_passes_the_derivation(capsys):
    assert checks.euler_step(euler)
    assert "all passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        lambda *a: euler(*a, sigma_of=lambda a: (1 - a) ** 0.5),  # DPM-Solver's s_t, not Euler's sigma
        lambda *a: euler(*a, sign=-1.0),
        lambda eps, x, a, a_next: x - ((1 - a) / a) ** 0.5 * eps,  # jumps straight to x0_hat
        lambda eps, x, a, a_next: euler(eps, x / ((1 - a) / a + 1) ** 0.5, a, a_next),  # scaled input
    ],
    ids=["s_t for sigma", "wrong sign", "jump to x0", "scale_model_input applied to x"],
)
def test_euler_step_rejects_wrong_answers(wrong, capsys):
    assert not checks.euler_step(wrong)
    assert "FAIL euler_step" in capsys.readouterr().out


def dpm2m(x, d0, d0_prev, abar_prev, abar, abar_next, order=2, half=0.5, ratio=True, s_of=None):
    alpha = lambda a: a**0.5  # noqa: E731
    s = s_of or (lambda a: (1 - a) ** 0.5)
    lam = lambda a: torch.log(alpha(a) / s(a))  # noqa: E731
    h, h_prev = lam(abar_next) - lam(abar), lam(abar) - lam(abar_prev)
    d1 = (d0 - d0_prev) * (h / h_prev if ratio else 1.0)
    d = d0 + half * d1 if order == 2 else d0
    return s(abar_next) / s(abar) * x - alpha(abar_next) * (torch.exp(-h) - 1) * d


def test_dpm_solver_2m_step_passes_the_derivation(capsys):
    assert checks.dpm_solver_2m_step(dpm2m)
    assert "all passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        lambda *a: dpm2m(*a, order=1),
        lambda *a: dpm2m(*a, half=1.0),
        lambda *a: dpm2m(*a, ratio=False),
        lambda *a: dpm2m(*a, s_of=lambda a: ((1 - a) / a) ** 0.5),  # Euler's sigma for s_t
    ],
    ids=["first order only", "D0 + D1", "D1 without h / h'", "Euler's sigma for s_t"],
)
def test_dpm_solver_2m_step_rejects_wrong_answers(wrong, capsys):
    assert not checks.dpm_solver_2m_step(wrong)
    assert "FAIL dpm_solver_2m_step" in capsys.readouterr().out
