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

from minisd.schedulers.common import karras_sigmas, predict_x0_and_eps, sigma_to_t, sigmas_from_alphas_cumprod
from minisd.schedulers.scheduling_utils import SchedulerMixin, register_to_config


def dpm_timesteps(n: int, num_train_timesteps: int, spacing: str, steps_offset: int, last: int) -> np.ndarray:
    """DPM-Solver's spacing: n + 1 points over [0, last), the final one (t = 0) dropped."""
    if spacing == "linspace":
        return np.linspace(0, last - 1, n + 1).round()[::-1][:-1].copy()
    if spacing == "leading":
        return (np.arange(0, n + 1) * (last // (n + 1)))[::-1][:-1] + steps_offset
    if spacing == "trailing":
        return np.round(np.arange(last, 0, -num_train_timesteps / n)) - 1
    raise ValueError(f"unknown timestep_spacing {spacing!r}: choose one of leading, trailing, linspace")


class DPMSolverMultistepScheduler(SchedulerMixin):
    """DPM-Solver++ (data prediction), multistep, order 1 or 2, midpoint or heun second-order rule."""

    _unknown_timestep_is_last = True
    _uses_sigmas = True

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        solver_order: int = 2,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        algorithm_type: str = "dpmsolver++",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        use_lu_lambdas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        final_sigmas_type: str = "zero",
        lambda_min_clipped: float = -float("inf"),
        variance_type: str | None = None,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        use_dynamic_shifting: bool = False,
        time_shift_type: str = "exponential",
    ):
        # configs of DEIS / UniPC carry their own solver names: fall back as diffusers does
        if algorithm_type == "deis":
            self.register_to_config(algorithm_type="dpmsolver++")
        if solver_type in ("logrho", "bh1", "bh2"):
            self.register_to_config(solver_type="midpoint")
        c = self.config
        if c.algorithm_type != "dpmsolver++" or solver_order not in (1, 2) or use_exponential_sigmas:
            raise NotImplementedError(
                "minisd implements DPM-Solver++ of order 1 or 2 (algorithm_type 'dpmsolver++') without "
                f"exponential sigmas, got algorithm_type={algorithm_type!r}, solver_order={solver_order}, "
                f"use_exponential_sigmas={use_exponential_sigmas}"
            )
        if c.solver_type not in ("midpoint", "heun") or final_sigmas_type not in ("zero", "sigma_min"):
            raise ValueError(
                "solver_type must be 'midpoint' or 'heun'; final_sigmas_type 'zero' or 'sigma_min'"
            )
        self._setup()
        alpha_t, sigma_t = self.alphas_cumprod**0.5, (1 - self.alphas_cumprod) ** 0.5
        self.lambda_t = torch.log(alpha_t) - torch.log(sigma_t)  # log-SNR / 2 of each training step, [T]
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float32)
        self.sigmas = torch.from_numpy(sigmas_from_alphas_cumprod(self.alphas_cumprod))
        self.model_outputs: list[torch.Tensor | None] = [None] * solver_order
        self.lower_order_nums = 0

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The UNet's input is x_t itself for this sampler."""
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: torch.device | str | None = None,
        mu: float | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Integer timesteps and their sigmas (plus a final 0 or sigma_min); resets the solver's memory.

        `timesteps` gives your own (descending); `mu` belongs to dynamic shifting, which minisd lacks."""
        c = self.config
        if mu is not None:
            raise NotImplementedError("minisd does not implement dynamic shifting (mu)")
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        if timesteps is not None and c.use_karras_sigmas:
            raise ValueError("custom timesteps cannot be combined with use_karras_sigmas")
        train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)
        if timesteps is not None:
            steps = np.array(timesteps, dtype=np.int64)
            num_inference_steps = len(steps)
        else:
            self._check_num_steps(num_inference_steps)
            # lambda_min_clipped: leave out the noisiest steps whose log-SNR falls below it
            clipped = torch.searchsorted(torch.flip(self.lambda_t, [0]), c.lambda_min_clipped).item()
            last = c.num_train_timesteps - clipped
            steps = dpm_timesteps(
                num_inference_steps, c.num_train_timesteps, c.timestep_spacing, c.steps_offset, last
            )
        if c.use_karras_sigmas:
            sigmas = karras_sigmas(train_sigmas[0].item(), train_sigmas[-1].item(), num_inference_steps)
            steps = sigma_to_t(sigmas, np.log(train_sigmas))
            steps = steps if c.beta_schedule == "squaredcos_cap_v2" else steps.round()
        else:
            sigmas = np.interp(steps, np.arange(len(train_sigmas)), train_sigmas)
        final = train_sigmas[0] if c.final_sigmas_type == "sigma_min" else 0.0
        self.sigmas = torch.from_numpy(np.append(sigmas, final).astype(np.float32))  # [n + 1]
        self.timesteps = torch.from_numpy(steps.astype(np.int64)).to(device)
        self.num_inference_steps = len(steps)
        self.model_outputs = [None] * c.solver_order  # x0_hat at the previous step(s)
        self.lower_order_nums = 0
        self._step_index = None
        self._begin_index = None

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
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        """One DPM-Solver++ step (deterministic: `generator` and `variance_noise` serve the SDE variants)."""
        self._check_ready()
        self._init_step_index(timestep)
        i, n, c = self._step_index, len(self.timesteps), self.config
        # the last step falls back to first order (always when it ends exactly at sigma = 0)
        last = i == n - 1 and (
            c.euler_at_final or (c.lower_order_final and n < 15) or c.final_sigmas_type == "zero"
        )

        if c.variance_type in ("learned", "learned_range"):
            model_output = model_output[:, :3]  # the first 3 channels predict noise, the rest the variance
        alpha_s0, sigma_s0, lambda_s0 = self._alpha_sigma_lambda(i)
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(i + 1)
        x0, _ = predict_x0_and_eps(model_output, sample, alpha_s0, sigma_s0, c.prediction_type)
        x0 = self._clip_x0(x0)
        self.model_outputs = [*self.model_outputs[1:], x0]
        sample = sample.float()
        h = lambda_t - lambda_s0
        prev_sample = sigma_t / sigma_s0 * sample - alpha_t * (torch.exp(-h) - 1.0) * x0  # first order
        if c.solver_order == 2 and self.lower_order_nums >= 1 and not last:
            _, _, lambda_s1 = self._alpha_sigma_lambda(i - 1)
            d1 = (x0 - self.model_outputs[-2]) * h / (lambda_s0 - lambda_s1)
            if c.solver_type == "midpoint":
                prev_sample = prev_sample - 0.5 * alpha_t * (torch.exp(-h) - 1.0) * d1
            else:  # heun
                prev_sample = prev_sample + alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0) * d1
        self.lower_order_nums = min(self.lower_order_nums + 1, c.solver_order)
        self._step_index += 1
        return self._output(prev_sample.to(model_output.dtype), None, return_dict)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """alpha_t x_0 + sigma_t noise, with sigma taken from this schedule (the timesteps must be in it)."""
        if self._begin_index is None:
            index = [self.index_for_timestep(t) for t in timesteps]
        else:
            index = [self._step_index if self._step_index is not None else self._begin_index] * len(timesteps)
        sigma = self.sigmas[index].to(original_samples.device, original_samples.dtype)
        sigma = sigma.flatten().reshape(-1, *([1] * (original_samples.ndim - 1)))
        alpha_t = 1 / (sigma**2 + 1) ** 0.5
        return alpha_t * original_samples + alpha_t * sigma * noise
