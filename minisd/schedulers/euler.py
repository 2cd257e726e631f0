"""Euler's method on the probability-flow ODE in sigma (Karras et al. 2022, "Algorithm 1") (chapter 03).

With x = x_0 + sigma eps the ODE is dx/dsigma = (x - x0_hat) / sigma = eps_hat, so one step is
    x_next = x + (sigma_next - sigma) * (x - x0_hat) / sigma
The UNet sees x / sqrt(sigma^2 + 1) (`scale_model_input`), and the start noise is scaled by sigma_max.
"""

from __future__ import annotations

import numpy as np
import torch

from minisd.schedulers.common import randn_tensor, sigma_to_t
from minisd.schedulers.scheduling_sigma import SigmaSchedulerMixin
from minisd.schedulers.scheduling_utils import register_to_config


class EulerDiscreteScheduler(SigmaSchedulerMixin):
    """Euler sampling over the training sigmas (optionally Karras / exponentially spaced); `s_churn`
    adds Karras' stochastic "churn" noise."""

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        prediction_type: str = "epsilon",
        interpolation_type: str = "linear",
        use_karras_sigmas: bool | None = False,
        use_exponential_sigmas: bool | None = False,
        use_beta_sigmas: bool | None = False,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        timestep_spacing: str = "linspace",
        timestep_type: str = "discrete",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        final_sigmas_type: str = "zero",
    ):
        if interpolation_type != "linear":
            raise NotImplementedError(f"minisd does not implement interpolation_type={interpolation_type!r}")
        for key, value, choices in (
            ("timestep_type", timestep_type, ("discrete", "continuous")),
            ("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min")),
        ):
            if value not in choices:
                raise ValueError(f"unknown {key} {value!r}: choose one of {choices}")
        self._setup()
        if self._continuous_time():
            self.timesteps = 0.25 * self.sigmas[:-1].log()

    def _continuous_time(self) -> bool:
        """v-prediction models with continuous time take 0.25 log(sigma) as their timestep."""
        return self.config.timestep_type == "continuous" and self.config.prediction_type == "v_prediction"

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: torch.device | str | None = None,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
    ) -> None:
        """Timesteps (float; fractional with Karras sigmas) and sigmas, ending at 0 (or sigma_min).

        Instead of a step count, pass your own descending `timesteps`, or `sigmas` (with the final one)."""
        c = self.config
        if sum(x is not None for x in (num_inference_steps, timesteps, sigmas)) != 1:
            raise ValueError("pass exactly one of num_inference_steps, timesteps or sigmas")
        if timesteps is not None and (
            c.use_karras_sigmas or c.use_exponential_sigmas or self._continuous_time()
        ):
            raise ValueError(
                "custom timesteps cannot be combined with Karras/exponential sigmas or continuous time"
            )
        train_sigmas = self._train_sigmas()
        if sigmas is not None:
            sigmas = np.array(sigmas, dtype=np.float32)
            steps, final = sigma_to_t(sigmas[:-1], np.log(train_sigmas)), sigmas[-1]
            sigmas = sigmas[:-1]
        else:
            if timesteps is not None:
                steps = np.array(timesteps, dtype=np.float32)
            else:
                steps = self._spaced_timesteps(num_inference_steps, rounded=False).astype(np.float32)
            n = num_inference_steps or len(steps)
            steps, sigmas = self._sigma_schedule(steps, n)
            final = train_sigmas[0] if c.final_sigmas_type == "sigma_min" else 0.0
        self._set_sigmas(steps, sigmas, device, final)
        if self._continuous_time():
            self.timesteps = (0.25 * self.sigmas[:-1].log()).to(device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ):
        """One Euler step to the next sigma; with s_churn, first raise sigma to sigma_hat with noise."""
        self._init_step_index(timestep)
        sigma = self.sigmas[self._step_index]
        sample = sample.float()
        gamma = min(s_churn / (len(self.sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            noise = randn_tensor(model_output.shape, generator, model_output.device, model_output.dtype)
            sample = sample + noise * s_noise * (sigma_hat**2 - sigma**2) ** 0.5
        x0 = self._predict_x0(
            model_output, sample, sigma_hat if self.config.prediction_type == "epsilon" else sigma
        )
        derivative = (sample - x0) / sigma_hat
        prev_sample = sample + derivative * (self.sigmas[self._step_index + 1] - sigma_hat)
        self._step_index += 1
        return self._output(prev_sample.to(model_output.dtype), x0, return_dict)
