"""The base of the samplers that walk x = x_0 + sigma * eps: Euler, Euler ancestral, LMS (chapter 03)."""

from __future__ import annotations

import numpy as np
import torch

from minisd.schedulers.common import (
    broadcast_to,
    exponential_sigmas,
    karras_sigmas,
    predict_x0_and_eps,
    sigma_to_t,
    sigmas_from_alphas_cumprod,
)
from minisd.schedulers.scheduling_utils import SchedulerMixin


class SigmaSchedulerMixin(SchedulerMixin):
    """The samplers that walk x = x_0 + sigma * eps (Euler, Euler ancestral, LMS; k-diffusion's view).

    The UNet was trained on x_t = alpha x_0 + ..., so its input is x / sqrt(sigma^2 + 1), and the
    starting noise has standard deviation sigma_max (about 14.6 for v1.5).
    """

    _uses_sigmas = True

    def _setup(self) -> None:
        super()._setup()
        # before set_timesteps: all T training timesteps, so add_noise works for any integer t
        T = self.config.num_train_timesteps
        self._set_sigmas(np.arange(T - 1, -1, -1.0), self._train_sigmas()[::-1].copy(), None)
        self.num_inference_steps = None

    def _train_sigmas(self) -> np.ndarray:
        return sigmas_from_alphas_cumprod(self.alphas_cumprod)  # ascending in t, [T]

    def _sigma_schedule(
        self, timesteps: np.ndarray, num_inference_steps: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(timesteps, sigmas) of a run: the training sigmas at the timesteps, or Karras / exponential
        spacing between their ends (then the timesteps follow the sigmas)."""
        train_sigmas = self._train_sigmas()
        sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
        karras, exponential = self._option("use_karras_sigmas"), self._option("use_exponential_sigmas")
        if karras or exponential:
            lo = self._option("sigma_min") or sigmas[-1].item()
            hi = self._option("sigma_max") or sigmas[0].item()
            spacing = karras_sigmas if karras else exponential_sigmas
            sigmas = spacing(lo, hi, num_inference_steps)
            timesteps = sigma_to_t(sigmas, np.log(train_sigmas))
        return timesteps, sigmas

    def _set_sigmas(
        self, timesteps: np.ndarray, sigmas: np.ndarray, device, final_sigma: float = 0.0
    ) -> None:
        self.sigmas = torch.from_numpy(np.append(sigmas, final_sigma).astype(np.float32))  # [n + 1]
        self.timesteps = torch.from_numpy(np.asarray(timesteps, dtype=np.float32)).to(device)
        self.num_inference_steps = len(timesteps)
        self._step_index = None
        self._begin_index = None

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        sigma_max = self.sigmas.max()
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return sigma_max
        return (sigma_max**2 + 1) ** 0.5

    def scale_model_input(self, sample: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
        """x / sqrt(sigma^2 + 1): back to the alpha_bar-scaled input the UNet was trained on."""
        self._init_step_index(timestep)
        return sample / (self.sigmas[self._step_index] ** 2 + 1) ** 0.5

    def _predict_x0(self, model_output: torch.Tensor, sample: torch.Tensor, sigma) -> torch.Tensor:
        alpha_t = 1 / (sigma**2 + 1) ** 0.5  # the VP view of the same point: x_vp = alpha_t x
        prediction_type = self.config.prediction_type
        if prediction_type == "original_sample":
            prediction_type = "sample"
        x0, _ = predict_x0_and_eps(model_output, sample * alpha_t, alpha_t, sigma * alpha_t, prediction_type)
        return x0

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """x_0 + sigma_t noise, sigma_t taken from this schedule (the timesteps must be in it)."""
        sigmas = self.sigmas.to(original_samples.device, original_samples.dtype)
        if self._begin_index is None:
            index = [self.index_for_timestep(t) for t in timesteps]
        else:  # a pipeline that starts part-way (image-to-image, inpainting)
            index = [self._step_index if self._step_index is not None else self._begin_index] * len(timesteps)
        return original_samples + broadcast_to(sigmas[index], original_samples) * noise
