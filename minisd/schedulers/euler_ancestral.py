"""Euler ancestral ("Euler a"): an Euler step to a lower sigma, then fresh noise back up (chapter 03).

Going from sigma to sigma_next, split sigma_next^2 = sigma_down^2 + sigma_up^2 with
    sigma_up = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)
take the deterministic Euler step to sigma_down and add sigma_up * z. The result depends on the
seed at every step, which is why "Euler a" images keep changing as the step count changes.
"""

from __future__ import annotations

import numpy as np
import torch

from minisd.schedulers.common import randn_tensor
from minisd.schedulers.scheduling_sigma import SigmaSchedulerMixin
from minisd.schedulers.scheduling_utils import register_to_config


class EulerAncestralDiscreteScheduler(SigmaSchedulerMixin):
    """Stochastic (ancestral) Euler sampling over the training sigmas."""

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        self._setup()

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Timesteps (float) and their sigmas, ending with sigma = 0."""
        steps = self._spaced_timesteps(num_inference_steps, rounded=False)
        self._set_sigmas(*self._sigma_schedule(steps, num_inference_steps), device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ):
        """Euler step to sigma_down, then add sigma_up * noise drawn from `generator`."""
        self._init_step_index(timestep)
        sigma, sigma_next = self.sigmas[self._step_index], self.sigmas[self._step_index + 1]
        sample = sample.float()
        x0 = self._predict_x0(model_output, sample, sigma)
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        prev_sample = sample + (sample - x0) / sigma * (sigma_down - sigma)
        noise = randn_tensor(model_output.shape, generator, model_output.device, model_output.dtype)
        self._step_index += 1
        return self._output((prev_sample + noise * sigma_up).to(model_output.dtype), x0, return_dict)
