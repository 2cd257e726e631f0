"""DDIM (Song et al. 2021): a non-Markovian sampler that reuses a DDPM's training, deterministic at eta = 0.

One step from t to t_prev = t - T // n:
    x0_hat  = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
    sigma_t = eta * sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev))
    x_prev  = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma_t^2) eps + sigma_t z
eta = 1 gives DDPM's posterior variance (chapter 03).
"""

from __future__ import annotations

import numpy as np
import torch

from minisd.schedulers.common import predict_x0_and_eps, randn_tensor
from minisd.schedulers.scheduling_utils import SchedulerMixin, register_to_config


class DDIMScheduler(SchedulerMixin):
    """DDIM sampling; `set_alpha_to_one=False` (v1.5) ends on alpha_bar_0 instead of 1."""

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
    ):
        self._setup()
        # alpha_bar "before" the last step: 1 (a clean image) or alpha_bar_0 (v1.5's choice)
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Choose the timesteps of an n-step run; v1.5 (leading, offset 1, n = 50) gives 981, 961, ..., 1."""
        steps = self._spaced_timesteps(num_inference_steps).astype(np.int64)
        self.timesteps = torch.from_numpy(steps).to(device)
        self.num_inference_steps = num_inference_steps

    def _alpha_bars(self, t: int, prev_t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.alphas_cumprod[t], self.alphas_cumprod[
            prev_t
        ] if prev_t >= 0 else self.final_alpha_cumprod

    def _get_variance(self, timestep: int, prev_timestep: int) -> torch.Tensor:
        """DDPM's posterior variance for the stride prev_timestep -> timestep (times eta^2 in a step)."""
        alpha_bar, alpha_bar_prev = self._alpha_bars(timestep, prev_timestep)
        return (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        """x_t -> x_{t - T//n}; eta > 0 adds fresh noise (`variance_noise`, or drawn from `generator`)."""
        self._check_ready()
        if not 0 <= eta <= 1:  # above 1 the noise outgrows the step (NaN); below 0 it means nothing
            raise ValueError(f"DDIM eta={eta!r}: it must be between 0 (deterministic) and 1 (DDPM's noise)")
        t = int(timestep)
        prev_t = t - self.config.num_train_timesteps // self.num_inference_steps
        alpha_bar, alpha_bar_prev = self._alpha_bars(t, prev_t)

        x0, eps = predict_x0_and_eps(
            model_output, sample, alpha_bar**0.5, (1 - alpha_bar) ** 0.5, self.config.prediction_type
        )
        x0 = self._clip_x0(x0)
        if use_clipped_model_output:  # the eps consistent with the clipped x0
            eps = (sample - alpha_bar**0.5 * x0) / (1 - alpha_bar) ** 0.5
        std = eta * self._get_variance(t, prev_t) ** 0.5
        prev_sample = alpha_bar_prev**0.5 * x0 + (1 - alpha_bar_prev - std**2) ** 0.5 * eps
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("pass either generator or variance_noise, not both")
            if variance_noise is None:
                variance_noise = randn_tensor(
                    model_output.shape, generator, model_output.device, model_output.dtype
                )
            prev_sample = prev_sample + std * variance_noise
        return self._output(prev_sample, x0, return_dict)
