"""Checkers for chapter 03's sampler steps written by hand from the equations of section 3.4: one Euler
step and one second-order DPM-Solver++ (2M) step, graded against the package's schedulers with SD
v1.5's betas on random inputs."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minisd.book.checks.compare import compare_cases

V15_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def euler_step(candidate: Callable) -> bool:
    """Check `candidate(eps, x, alpha_bar_t, alpha_bar_next) -> x_next`: one Euler step in sigma for an
    epsilon-predicting model, x being Euler's (unscaled) sample and the alpha_bars 0-d tensors
    (alpha_bar_next = 1 on the last step, where sigma_next = 0), against `EulerDiscreteScheduler.step`."""
    from minisd.schedulers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(**V15_BETAS)
    abar = scheduler.alphas_cumprod
    gen = torch.Generator().manual_seed(0)
    cases = []
    for label, t, t_next, shape in [
        ("t=999 -> 949", 999, 949, (1, 4, 8, 8)),
        ("t=500 -> 450, batch", 500, 450, (2, 4, 8, 8)),
        ("t=120 -> 20", 120, 20, (5,)),
        ("t=20 -> the end (sigma 0)", 20, None, (3, 2)),
    ]:
        sigma = ((1 - abar[t]) / abar[t]) ** 0.5
        eps, x = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen) * sigma
        cases.append((label, (eps, x, abar[t], abar[t_next] if t_next is not None else torch.tensor(1.0))))

    def reference(eps, x, alpha_bar_t, alpha_bar_next):
        t = int((abar - alpha_bar_t).abs().argmin())
        steps = [t] if alpha_bar_next == 1 else [t, int((abar - alpha_bar_next).abs().argmin())]
        scheduler.set_timesteps(timesteps=steps)
        return scheduler.step(eps, t, x).prev_sample

    return compare_cases("euler_step", candidate, reference, cases)


def dpm_solver_2m_step(candidate: Callable) -> bool:
    """Check `candidate(x, x0_hat, x0_hat_prev, alpha_bar_prev, alpha_bar, alpha_bar_next) -> x_next`:
    one second-order DPM-Solver++ (2M, midpoint) step from x at alpha_bar to alpha_bar_next, given the
    model's clean-sample guesses D0 = x0_hat now and x0_hat_prev one step earlier (at alpha_bar_prev),
    against `DPMSolverMultistepScheduler.step` (a step between noisy levels, not the last one)."""
    from minisd.schedulers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(**V15_BETAS, prediction_type="sample")
    abar = scheduler.alphas_cumprod
    gen = torch.Generator().manual_seed(0)
    cases = []
    for label, (t_prev, t, t_next), shape in [
        ("t=999, 949 -> 899", (999, 949, 899), (1, 4, 8, 8)),
        ("t=600, 500 -> 400, batch", (600, 500, 400), (2, 4, 8, 8)),
        ("uneven steps t=300, 250 -> 100", (300, 250, 100), (6,)),
        ("t=80, 60 -> 40", (80, 60, 40), (3, 2)),
    ]:
        x, d0, d0_prev = (torch.randn(shape, generator=gen) for _ in range(3))
        cases.append((label, (x, d0, d0_prev, abar[t_prev], abar[t], abar[t_next])))
    cases.append(("the guess did not change", (x, d0, d0.clone(), *cases[-1][1][3:])))

    def reference(x, d0, d0_prev, alpha_bar_prev, alpha_bar, alpha_bar_next):
        steps = [int((abar - a).abs().argmin()) for a in (alpha_bar_prev, alpha_bar, alpha_bar_next)]
        scheduler.set_timesteps(timesteps=[*steps, 0])  # the step to t_next is not the last one
        scheduler.step(d0_prev, steps[0], torch.zeros_like(x))  # "sample" prediction: the output is x0_hat
        return scheduler.step(d0, steps[1], x).prev_sample

    return compare_cases("dpm_solver_2m_step", candidate, reference, cases)
