"""Linear multistep (LMS) in sigma (Karras et al. / k-diffusion's `sample_lms`) (chapter 03).

Like Euler, but the slope d = (x - x0_hat) / sigma is extrapolated from the last `order` slopes
with a Lagrange polynomial in sigma, integrated exactly over the step:
    x_next = x + sum_j c_j d_{k-j},
    c_j = int over [sigma_k, sigma_{k+1}] of prod_{m != j} (s - sigma_{k-m}) / (sigma_{k-j} - sigma_{k-m})
The integrand is a polynomial of degree < 4, so 4-point Gauss-Legendre quadrature is exact (no scipy).
"""

from __future__ import annotations

import numpy as np
import torch

from minisd.schedulers.common import SigmaSchedulerMixin, spaced_timesteps

GAUSS_NODES, GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(4)  # exact up to degree 7 on [-1, 1]


class LMSDiscreteScheduler(SigmaSchedulerMixin):
    """Linear multistep sampling over the training sigmas (optionally Karras-spaced)."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        use_karras_sigmas: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        self._setup(locals())
        self._set_training_schedule()
        self.derivatives: list[torch.Tensor] = []

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Timesteps (float) and their sigmas, ending with sigma = 0; forgets the stored slopes."""
        self._check_num_steps(num_inference_steps)
        c = self.config
        timesteps = spaced_timesteps(
            num_inference_steps, c.num_train_timesteps, c.timestep_spacing, c.steps_offset, rounded=False
        )
        self._set_sigma_schedule(timesteps, device, c.use_karras_sigmas)
        self.derivatives = []

    def get_lms_coefficient(self, order: int, index: int, j: int) -> float:
        """c_j: the Lagrange basis polynomial of slope d_{index-j}, integrated over one step."""
        nodes = self.sigmas[index - torch.arange(order)].double().numpy()  # sigma_k, sigma_{k-1}, ...
        a, b = self.sigmas[index].item(), self.sigmas[index + 1].item()
        s = (b - a) / 2 * GAUSS_NODES + (a + b) / 2  # quadrature points mapped onto [a, b]
        basis = np.ones_like(s)
        for m in range(order):
            if m != j:
                basis *= (s - nodes[m]) / (nodes[j] - nodes[m])
        return float((b - a) / 2 * np.sum(GAUSS_WEIGHTS * basis))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        order: int = 4,
    ) -> torch.Tensor:
        """One LMS step using up to `order` stored slopes (deterministic; `generator` is unused)."""
        sigma = self._current_sigma(timestep)
        x0 = self._predict_x0(model_output, sample, sigma)
        self.pred_original_sample = x0
        self.derivatives = [*self.derivatives, (sample - x0) / sigma][-order:]  # the last `order` slopes
        order = min(self._step_index + 1, order)
        coeffs = [self.get_lms_coefficient(order, self._step_index, j) for j in range(order)]
        prev_sample = sample + sum(c * d for c, d in zip(coeffs, reversed(self.derivatives), strict=False))
        self._step_index += 1
        return prev_sample
