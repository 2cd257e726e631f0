"""Euler's method on the probability-flow ODE in sigma (Karras et al. 2022, "Algorithm 1") (chapter 03).

With x = x_0 + sigma eps the ODE is dx/dsigma = (x - x0_hat) / sigma = eps_hat, so one step is
    x_next = x + (sigma_next - sigma) * (x - x0_hat) / sigma
The UNet sees x / sqrt(sigma^2 + 1) (`scale_model_input`), and the start noise is scaled by sigma_max.
"""

from __future__ import annotations

import torch

from minisd.schedulers.common import SigmaSchedulerMixin, spaced_timesteps


class EulerDiscreteScheduler(SigmaSchedulerMixin):
    """Deterministic Euler sampling over the training sigmas (optionally Karras-spaced)."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        prediction_type: str = "epsilon",
        use_karras_sigmas: bool = False,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        self._setup(locals())
        self._set_training_schedule()

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Timesteps (float, fractional with Karras sigmas) and their sigmas, ending with sigma = 0."""
        self._check_num_steps(num_inference_steps)
        c = self.config
        timesteps = spaced_timesteps(
            num_inference_steps, c.num_train_timesteps, c.timestep_spacing, c.steps_offset, rounded=False
        )
        self._set_sigma_schedule(timesteps, device, c.use_karras_sigmas)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One Euler step from sigma to the next sigma (deterministic; `generator` is unused)."""
        sigma = self._current_sigma(timestep)
        sample = sample.float()
        x0 = self._predict_x0(model_output, sample, sigma)
        self.pred_original_sample = x0
        derivative = (sample - x0) / sigma
        prev_sample = sample + derivative * (self.sigmas[self._step_index + 1] - sigma)
        self._step_index += 1
        return prev_sample.to(model_output.dtype)
