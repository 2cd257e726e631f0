"""DDIM (Song et al. 2021): a non-Markovian sampler that reuses a DDPM's training, deterministic at eta = 0.

One step from t to t_prev = t - T // n:
    x0_hat  = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
    sigma_t = eta * sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev))
    x_prev  = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma_t^2) eps + sigma_t z
eta = 1 gives DDPM's posterior variance (chapter 03).
"""

from __future__ import annotations

import torch

from minisd.schedulers.common import SchedulerMixin, predict_x0_and_eps, randn_tensor, spaced_timesteps


class DDIMScheduler(SchedulerMixin):
    """DDIM sampling; `set_alpha_to_one=False` (v1.5) ends on alpha_bar_0 instead of 1."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
    ):
        self._setup(locals())
        # alpha_bar "before" the last step: 1 (a clean image) or alpha_bar_0 (v1.5's choice)
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Choose the timesteps of an n-step run; v1.5 (leading, offset 1, n = 50) gives 981, 961, ..., 1."""
        self._check_num_steps(num_inference_steps)
        c = self.config
        timesteps = spaced_timesteps(
            num_inference_steps, c.num_train_timesteps, c.timestep_spacing, c.steps_offset
        )
        self.timesteps = torch.from_numpy(timesteps.astype("int64")).to(device)
        self.num_inference_steps = num_inference_steps

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        """x_t -> x_{t - T//n}; eta > 0 adds fresh noise drawn from `generator`."""
        self._check_ready()
        t = int(timestep)
        prev_t = t - self.config.num_train_timesteps // self.num_inference_steps
        alpha_bar = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod

        x0, eps = predict_x0_and_eps(
            model_output, sample, alpha_bar**0.5, (1 - alpha_bar) ** 0.5, self.config.prediction_type
        )
        if self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        self.pred_original_sample = x0

        variance = (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        std = eta * variance**0.5
        prev_sample = alpha_bar_prev**0.5 * x0 + (1 - alpha_bar_prev - std**2) ** 0.5 * eps
        if eta > 0:
            prev_sample = prev_sample + std * randn_tensor(
                model_output.shape, generator, model_output.device, model_output.dtype
            )
        return prev_sample
