"""DDPM (Ho et al. 2020): ancestral sampling from the posterior q(x_{t-1} | x_t, x_0) (chapter 03).

Given the model's guess of x_0, the posterior of one step back is Gaussian with
    mean     = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t) x_0
               + sqrt(alpha_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t) x_t
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) beta_t    ("fixed_small"; "fixed_large": beta_t)
where beta_t = 1 - alpha_bar_t / alpha_bar_prev spans the whole stride when fewer steps are taken.
"""

from __future__ import annotations

import numpy as np
import torch

from minisd.schedulers.common import predict_x0_and_eps, randn_tensor
from minisd.schedulers.scheduling_utils import SchedulerMixin, register_to_config

VARIANCE_TYPES = (
    "fixed_small",
    "fixed_small_log",
    "fixed_large",
    "fixed_large_log",
    "learned",
    "learned_range",
)


class DDPMScheduler(SchedulerMixin):
    """Stochastic DDPM sampling; with all 1000 steps it is the sampler the model was trained for."""

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        if variance_type is None:  # a config from DPM-Solver: no learned variance
            self.register_to_config(variance_type="fixed_small")
        elif variance_type not in VARIANCE_TYPES:
            raise ValueError(f"unknown variance_type {variance_type!r}: choose one of {VARIANCE_TYPES}")
        self._setup()
        # before set_timesteps: every training timestep, so `for t in scheduler.timesteps` runs 1000 steps
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)
        self.custom_timesteps = False

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: torch.device | str | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the timesteps of an n-step run (diffusers' spacing rules), or pass your own (descending)."""
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        if timesteps is not None:
            if any(b >= a for a, b in zip(timesteps, timesteps[1:], strict=False)):
                raise ValueError("custom timesteps must be in descending order")
            if timesteps[0] >= self.config.num_train_timesteps:
                raise ValueError(
                    f"custom timesteps must start below num_train_timesteps={self.config.num_train_timesteps}"
                )
            steps = np.array(timesteps, dtype=np.int64)
        else:
            steps = self._spaced_timesteps(num_inference_steps).astype(np.int64)
            self.num_inference_steps = num_inference_steps
        self.custom_timesteps = timesteps is not None
        self.timesteps = torch.from_numpy(steps).to(device)

    def previous_timestep(self, timestep: int) -> int | torch.Tensor:
        """The next timestep of the schedule (-1 after the last one; t - 1 before set_timesteps)."""
        if not (self.custom_timesteps or self.num_inference_steps):
            return timestep - 1
        index = (self.timesteps.cpu() == int(timestep)).nonzero()[0].item()
        return self.timesteps[index + 1] if index + 1 < len(self.timesteps) else torch.tensor(-1)

    def _get_variance(self, t: int, predicted_variance: torch.Tensor | None = None) -> torch.Tensor:
        """The variance of one step back from t (its log for the "*_log" and "learned_range" types)."""
        prev_t = int(self.previous_timestep(t))
        alpha_bar = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)
        beta = 1 - alpha_bar / alpha_bar_prev  # the beta of the whole stride t_prev -> t
        posterior = torch.clamp((1 - alpha_bar_prev) / (1 - alpha_bar) * beta, min=1e-20)
        kind = self.config.variance_type
        if kind == "fixed_small":
            return posterior
        if kind == "fixed_small_log":  # returned as a standard deviation, like diffusers
            return posterior**0.5
        if kind == "fixed_large":
            return beta
        if kind == "fixed_large_log":
            return torch.log(beta)
        if kind == "learned":
            return predicted_variance
        frac = (predicted_variance + 1) / 2  # learned_range: interpolate the log variance
        return frac * torch.log(beta) + (1 - frac) * torch.log(posterior)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ):
        """x_t -> x_{t_prev}: the posterior mean plus sqrt(variance) * fresh noise (none at t = 0)."""
        t = int(timestep)
        prev_t = int(self.previous_timestep(t))
        predicted_variance = None
        learned = self.config.variance_type in ("learned", "learned_range")
        if learned and model_output.shape[1] == 2 * sample.shape[1]:
            model_output, predicted_variance = model_output.split(sample.shape[1], dim=1)
        alpha_bar = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)
        beta = 1 - alpha_bar / alpha_bar_prev

        x0, _ = predict_x0_and_eps(
            model_output, sample, alpha_bar**0.5, (1 - alpha_bar) ** 0.5, self.config.prediction_type
        )
        x0 = self._clip_x0(x0)
        x0_coeff = alpha_bar_prev**0.5 * beta / (1 - alpha_bar)
        xt_coeff = (1 - beta) ** 0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar)
        prev_sample = x0_coeff * x0 + xt_coeff * sample
        if t > 0:
            noise = randn_tensor(model_output.shape, generator, model_output.device, model_output.dtype)
            variance = self._get_variance(t, predicted_variance)
            kind = self.config.variance_type
            std = (
                variance
                if kind == "fixed_small_log"
                else (torch.exp(0.5 * variance) if kind == "learned_range" else variance**0.5)
            )
            prev_sample = prev_sample + std * noise
        return self._output(prev_sample, x0, return_dict)
