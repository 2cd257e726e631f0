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

from minisd.schedulers.scheduling_sigma import SigmaSchedulerMixin
from minisd.schedulers.scheduling_utils import register_to_config

GAUSS_NODES, GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(4)  # exact up to degree 7 on [-1, 1]


class LMSDiscreteScheduler(SigmaSchedulerMixin):
    """Linear multistep sampling over the training sigmas (optionally Karras / exponentially spaced)."""

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
    ):
        self._setup()
        self.derivatives: list[torch.Tensor] = []

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Timesteps (float) and their sigmas, ending with sigma = 0; forgets the stored slopes."""
        steps = self._spaced_timesteps(num_inference_steps, rounded=False)
        self._set_sigmas(*self._sigma_schedule(steps, num_inference_steps), device)
        self.derivatives = []

    def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
        """c_j (j = current_order): the Lagrange basis of slope d_{t-j}, integrated over one step."""
        nodes = self.sigmas[t - torch.arange(order)].double().numpy()  # sigma_k, sigma_{k-1}, ...
        a, b = self.sigmas[t].item(), self.sigmas[t + 1].item()
        s = (b - a) / 2 * GAUSS_NODES + (a + b) / 2  # quadrature points mapped onto [a, b]
        basis = np.ones_like(s)
        for m in range(order):
            if m != current_order:
                basis *= (s - nodes[m]) / (nodes[current_order] - nodes[m])
        return float((b - a) / 2 * np.sum(GAUSS_WEIGHTS * basis))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        order: int = 4,
        return_dict: bool = True,
    ):
        """One LMS step using up to `order` stored slopes."""
        self._init_step_index(timestep)
        sigma = self.sigmas[self._step_index]
        x0 = self._predict_x0(model_output, sample, sigma)
        self.derivatives = [*self.derivatives, (sample - x0) / sigma][-order:]  # the last `order` slopes
        order = min(self._step_index + 1, order)
        coeffs = [self.get_lms_coefficient(order, self._step_index, j) for j in range(order)]
        prev_sample = sample + sum(c * d for c, d in zip(coeffs, reversed(self.derivatives), strict=False))
        self._step_index += 1
        return self._output(prev_sample, x0, return_dict)
