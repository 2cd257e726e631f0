"""Euler ancestral ("Euler a"): an Euler step to a lower sigma, then fresh noise back up (chapter 03).

Going from sigma to sigma_next, split sigma_next^2 = sigma_down^2 + sigma_up^2 with
    sigma_up = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)
take the deterministic Euler step to sigma_down and add sigma_up * z. The result depends on the
seed at every step, which is why "Euler a" images keep changing as the step count changes.
"""

from __future__ import annotations

import torch

from minisd.schedulers.common import SigmaSchedulerMixin, randn_tensor, spaced_timesteps


class EulerAncestralDiscreteScheduler(SigmaSchedulerMixin):
    """Stochastic (ancestral) Euler sampling over the training sigmas."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        self._setup(locals())
        self._set_training_schedule()

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Timesteps (float) and their sigmas, ending with sigma = 0."""
        self._check_num_steps(num_inference_steps)
        c = self.config
        timesteps = spaced_timesteps(
            num_inference_steps, c.num_train_timesteps, c.timestep_spacing, c.steps_offset, rounded=False
        )
        self._set_sigma_schedule(timesteps, device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Euler step to sigma_down, then add sigma_up * noise drawn from `generator`."""
        sigma = self._current_sigma(timestep)
        sigma_next = self.sigmas[self._step_index + 1]
        sample = sample.float()
        x0 = self._predict_x0(model_output, sample, sigma)
        self.pred_original_sample = x0
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        prev_sample = sample + (sample - x0) / sigma * (sigma_down - sigma)
        noise = randn_tensor(model_output.shape, generator, model_output.device, model_output.dtype)
        self._step_index += 1
        return (prev_sample + noise * sigma_up).to(model_output.dtype)
