"""DPM-Solver++ 2M (Lu et al. 2022): a second-order multistep solver in log-SNR time (chapter 03).

With alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma alpha_t and lambda = log(alpha_t / sigma_t),
the data-prediction ODE is solved exactly for its linear part. From s0 to t, h = lambda_t - lambda_s0:
    1st order: x_t = (sigma_t / sigma_s0) x - alpha_t (e^{-h} - 1) D0,                D0 = x0_hat(s0)
    2nd order (midpoint): the same with D0 + D1 / 2,  D1 = (x0_hat(s0) - x0_hat(s1)) h / h_prev
The first step (and, by default, the last) is first order. `use_karras_sigmas` gives "DPM++ 2M Karras".
"""

from __future__ import annotations

import numpy as np
import torch

from minisd.schedulers.common import (
    SchedulerMixin,
    broadcast_to,
    karras_sigmas,
    predict_x0_and_eps,
    sigma_to_t,
    sigmas_from_alphas_cumprod,
)


def dpm_timesteps(n: int, num_train_timesteps: int, spacing: str, steps_offset: int) -> np.ndarray:
    """DPM-Solver's spacing: n + 1 points over [0, T), the last (t = 0) dropped."""
    T = num_train_timesteps
    if spacing == "linspace":
        return np.linspace(0, T - 1, n + 1).round()[::-1][:-1].copy()
    if spacing == "leading":
        return (np.arange(0, n + 1) * (T // (n + 1)))[::-1][:-1] + steps_offset
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / n)) - 1
    raise ValueError(f"unknown timestep_spacing {spacing!r}: choose one of leading, trailing, linspace")


class DPMSolverMultistepScheduler(SchedulerMixin):
    """DPM-Solver++ (data prediction), multistep, order 1 or 2, midpoint or heun second-order rule."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        solver_order: int = 2,
        prediction_type: str = "epsilon",
        algorithm_type: str = "dpmsolver++",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        use_karras_sigmas: bool = False,
        final_sigmas_type: str = "zero",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        self._setup(locals())
        if algorithm_type != "dpmsolver++" or solver_order not in (1, 2):
            raise NotImplementedError(
                "minisd implements DPM-Solver++ of order 1 or 2 (algorithm_type 'dpmsolver++'), "
                f"got algorithm_type={algorithm_type!r}, solver_order={solver_order}"
            )
        if solver_type not in ("midpoint", "heun") or final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(
                "solver_type must be 'midpoint' or 'heun'; final_sigmas_type 'zero' or 'sigma_min'"
            )

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Integer timesteps and their sigmas (plus a final 0 or sigma_min); resets the solver's memory."""
        self._check_num_steps(num_inference_steps)
        c = self.config
        timesteps = dpm_timesteps(
            num_inference_steps, c.num_train_timesteps, c.timestep_spacing, c.steps_offset
        )
        train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        if c.use_karras_sigmas:
            sigmas = karras_sigmas(train_sigmas[0].item(), train_sigmas[-1].item(), num_inference_steps)
            timesteps = sigma_to_t(sigmas, np.log(train_sigmas)).round()
        else:
            sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
        last = train_sigmas[0] if c.final_sigmas_type == "sigma_min" else 0.0
        self.sigmas = torch.from_numpy(np.append(sigmas, last).astype(np.float32))  # [n + 1]
        self.timesteps = torch.from_numpy(timesteps.astype(np.int64)).to(device)
        self.num_inference_steps = len(timesteps)
        self.model_outputs: list[torch.Tensor] = []  # x0_hat at the previous step(s)
        self._step_index: int | None = None

    def _alpha_sigma_lambda(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        alpha_t = 1 / (self.sigmas[index] ** 2 + 1) ** 0.5
        sigma_t = self.sigmas[index] * alpha_t
        return alpha_t, sigma_t, torch.log(alpha_t) - torch.log(sigma_t)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One DPM-Solver++ step (deterministic; `generator` is unused)."""
        self._check_ready()
        if self._step_index is None:
            hits = (self.timesteps.cpu() == int(timestep)).nonzero()
            self._step_index = (
                hits[1 if len(hits) > 1 else 0].item() if len(hits) else len(self.timesteps) - 1
            )
        i, n, c = self._step_index, len(self.timesteps), self.config
        # the last step falls back to first order (always when it ends exactly at sigma = 0)
        last = i == n - 1 and (
            c.euler_at_final or (c.lower_order_final and n < 15) or c.final_sigmas_type == "zero"
        )

        alpha_s0, sigma_s0, lambda_s0 = self._alpha_sigma_lambda(i)
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(i + 1)
        x0, _ = predict_x0_and_eps(model_output, sample, alpha_s0, sigma_s0, c.prediction_type)
        self.pred_original_sample = x0
        self.model_outputs = [*self.model_outputs, x0][-c.solver_order :]
        sample = sample.float()
        h = lambda_t - lambda_s0
        prev_sample = sigma_t / sigma_s0 * sample - alpha_t * (torch.exp(-h) - 1.0) * x0  # first order
        if c.solver_order == 2 and len(self.model_outputs) == 2 and not last:
            _, _, lambda_s1 = self._alpha_sigma_lambda(i - 1)
            d1 = (x0 - self.model_outputs[0]) * h / (lambda_s0 - lambda_s1)
            if c.solver_type == "midpoint":
                prev_sample = prev_sample - 0.5 * alpha_t * (torch.exp(-h) - 1.0) * d1
            else:  # heun
                prev_sample = prev_sample + alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0) * d1
        self._step_index += 1
        return prev_sample.to(model_output.dtype)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """alpha_t x_0 + sigma_t noise, with sigma taken from this schedule (the timesteps must be in it)."""
        index = [(self.timesteps.cpu() == int(t)).nonzero()[0].item() for t in timesteps]
        sigma = broadcast_to(
            self.sigmas[index].to(original_samples.device, original_samples.dtype), original_samples
        )
        alpha_t = 1 / (sigma**2 + 1) ** 0.5
        return alpha_t * original_samples + alpha_t * sigma * noise
