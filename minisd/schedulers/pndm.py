"""PNDM's PLMS sampler (Liu et al. 2022): the Stable Diffusion v1.5 default (chapter 03).

PLMS treats eps as the slope of an ODE and combines the last few slopes like a linear multistep
(Adams-Bashforth) method:
    1 slope: eps_0 (then a second evaluation at the same point: a Heun-like correction)
    2: (3 e_k - e_{k-1}) / 2    3: (23 e_k - 16 e_{k-1} + 5 e_{k-2}) / 12
    4: (55 e_k - 59 e_{k-1} + 37 e_{k-2} - 9 e_{k-3}) / 24
and moves x_t to x_prev with the PNDM "transfer" (the DDIM step written as one fraction):
    x_prev = sqrt(a_prev / a_t) x_t - (a_prev - a_t) eps / (a_t sqrt(1 - a_prev) + sqrt(a_t (1 - a_t) a_prev))
With skip_prk_steps the second timestep is visited twice, so 50 steps cost 51 UNet calls.
"""

from __future__ import annotations

import numpy as np
import torch

from minisd.schedulers.common import SchedulerMixin, predict_x0_and_eps, spaced_timesteps

ADAMS_BASHFORTH = {  # coefficients of e_k, e_{k-1}, ... by the number of stored slopes
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


class PNDMScheduler(SchedulerMixin):
    """Pseudo linear multistep sampling (PLMS; the Runge-Kutta warm-up of full PNDM is not implemented)."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        skip_prk_steps: bool = True,
        set_alpha_to_one: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
    ):
        self._setup(locals())
        if not skip_prk_steps:
            raise NotImplementedError("minisd's PNDMScheduler implements PLMS only: use skip_prk_steps=True")
        if prediction_type == "sample":
            raise ValueError(
                "PNDMScheduler supports prediction_type 'epsilon' or 'v_prediction', not 'sample'"
            )
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """n steps -> n + 1 timesteps, the second one repeated (981, 961, 961, 941, ..., 1 for v1.5)."""
        self._check_num_steps(num_inference_steps)
        c = self.config
        steps = spaced_timesteps(
            num_inference_steps, c.num_train_timesteps, c.timestep_spacing, c.steps_offset
        )
        if num_inference_steps > 1:
            steps = np.concatenate([steps[:1], steps[1:2], steps[1:]])
        self.timesteps = torch.from_numpy(steps.astype("int64")).to(device)
        self.num_inference_steps = num_inference_steps
        self.ets: list[torch.Tensor] = []  # the slopes eps seen so far (the last four)
        self.counter = 0  # UNet calls so far
        self.cur_sample: torch.Tensor | None = None  # x at the first timestep, for the redo

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One PLMS update (deterministic; `generator` is accepted for a uniform API and unused)."""
        self._check_ready()
        stride = self.config.num_train_timesteps // self.num_inference_steps
        t, prev_t = int(timestep), int(timestep) - stride
        if self.counter == 1:
            # the repeated timestep: redo the first step with the mean of both slopes (Heun-like)
            t, prev_t = t + stride, t
            eps = (model_output + self.ets[-1]) / 2
            sample, self.cur_sample = self.cur_sample, None
        else:
            self.ets = [*self.ets[-3:], model_output]
            if len(self.ets) == 1:
                eps, self.cur_sample = model_output, sample
            else:
                coeffs = ADAMS_BASHFORTH[len(self.ets)]
                eps = sum(c * e for c, e in zip(coeffs, reversed(self.ets), strict=True))
        self.counter += 1
        return self._get_prev_sample(sample, t, prev_t, eps)

    def _get_prev_sample(
        self, sample: torch.Tensor, t: int, prev_t: int, model_output: torch.Tensor
    ) -> torch.Tensor:
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        x0, eps = predict_x0_and_eps(
            model_output, sample, a_t**0.5, (1 - a_t) ** 0.5, self.config.prediction_type
        )
        self.pred_original_sample = x0
        denominator = a_t * (1 - a_prev) ** 0.5 + (a_t * (1 - a_t) * a_prev) ** 0.5
        return (a_prev / a_t) ** 0.5 * sample - (a_prev - a_t) * eps / denominator
