"""DDPM (Ho et al. 2020): ancestral sampling from the posterior q(x_{t-1} | x_t, x_0) (chapter 03).

Given the model's guess of x_0, the posterior of one step back is Gaussian with
    mean     = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t) x_0
               + sqrt(alpha_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t) x_t
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) beta_t    ("fixed_small"; "fixed_large": beta_t)
where beta_t = 1 - alpha_bar_t / alpha_bar_prev spans the whole stride when fewer steps are taken.
"""

from __future__ import annotations

import torch

from minisd.schedulers.common import SchedulerMixin, predict_x0_and_eps, randn_tensor, spaced_timesteps

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large")


class DDPMScheduler(SchedulerMixin):
    """Stochastic DDPM sampling; with all 1000 steps it is the sampler the model was trained for."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
    ):
        self._setup(locals())
        if variance_type not in VARIANCE_TYPES:
            raise NotImplementedError(f"variance_type {variance_type!r}: minisd implements {VARIANCE_TYPES}")

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Choose the timesteps of an n-step run (diffusers' spacing rules)."""
        self._check_num_steps(num_inference_steps)
        c = self.config
        timesteps = spaced_timesteps(
            num_inference_steps, c.num_train_timesteps, c.timestep_spacing, c.steps_offset
        )
        self.timesteps = torch.from_numpy(timesteps.astype("int64")).to(device)
        self.num_inference_steps = num_inference_steps

    def previous_timestep(self, timestep: int) -> int:
        """The next timestep of the schedule (-1 after the last one)."""
        index = (self.timesteps.cpu() == timestep).nonzero()[0].item()
        return int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else -1

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """x_t -> x_{t_prev}: the posterior mean plus sqrt(variance) * fresh noise (none at t = 0)."""
        self._check_ready()
        t = int(timestep)
        prev_t = self.previous_timestep(t)
        alpha_bar = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)
        beta = 1 - alpha_bar / alpha_bar_prev  # the beta of the whole stride t_prev -> t

        x0, _ = predict_x0_and_eps(
            model_output, sample, alpha_bar**0.5, (1 - alpha_bar) ** 0.5, self.config.prediction_type
        )
        if self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        self.pred_original_sample = x0

        x0_coeff = alpha_bar_prev**0.5 * beta / (1 - alpha_bar)
        xt_coeff = (1 - beta) ** 0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar)
        prev_sample = x0_coeff * x0 + xt_coeff * sample
        if t > 0:
            noise = randn_tensor(model_output.shape, generator, model_output.device, model_output.dtype)
            prev_sample = prev_sample + self._std(beta, alpha_bar, alpha_bar_prev) * noise
        return prev_sample

    def _std(self, beta: torch.Tensor, alpha_bar: torch.Tensor, alpha_bar_prev: torch.Tensor) -> torch.Tensor:
        """Standard deviation of the noise added in one step."""
        if self.config.variance_type == "fixed_large":
            return beta**0.5
        # fixed_small and fixed_small_log (the same value, computed via a log) use the posterior variance
        return torch.clamp((1 - alpha_bar_prev) / (1 - alpha_bar) * beta, min=1e-20) ** 0.5
