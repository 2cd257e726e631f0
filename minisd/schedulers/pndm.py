"""PNDM's PLMS sampler (Liu et al. 2022): the Stable Diffusion v1.5 default (chapter 03).

PLMS treats eps as the slope of an ODE and combines the last few slopes like a linear multistep
(Adams-Bashforth) method:
    1 slope: eps_0 (then a second evaluation at the same point: a Heun-like correction)
    2: (3 e_k - e_{k-1}) / 2    3: (23 e_k - 16 e_{k-1} + 5 e_{k-2}) / 12
    4: (55 e_k - 59 e_{k-1} + 37 e_{k-2} - 9 e_{k-3}) / 24
and moves x_t to x_prev with the PNDM "transfer" (the DDIM step written as one fraction):
    x_prev = sqrt(a_prev / a_t) x_t - (a_prev - a_t) eps / (a_t sqrt(1 - a_prev) + sqrt(a_t (1 - a_t) a_prev))
Multistep needs past slopes. Full PNDM (skip_prk_steps=False, diffusers' default) first takes three
Runge-Kutta (PRK) steps of four UNet calls each, at t, t - stride/2 (twice) and t - stride, weighted
1/6, 1/3, 1/3, 1/6. With skip_prk_steps (SD v1.5's config) the second timestep is visited twice
instead, so 50 steps cost 51 UNet calls.
"""

from __future__ import annotations

import numpy as np
import torch

from minisd.schedulers.common import predict_x0_and_eps
from minisd.schedulers.scheduling_utils import SchedulerMixin, register_to_config

ADAMS_BASHFORTH = {  # coefficients of e_k, e_{k-1}, ... by the number of stored slopes
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}
RUNGE_KUTTA = (1 / 6, 1 / 3, 1 / 3, 1 / 6)  # weights of the four slopes of one PRK step


class PNDMScheduler(SchedulerMixin):
    """Pseudo numerical methods: Runge-Kutta warm-up (PRK), then pseudo linear multistep (PLMS)."""

    pndm_order = 4  # slopes the multistep rule combines

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        skip_prk_steps: bool = False,
        set_alpha_to_one: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
    ):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"PNDMScheduler supports prediction_type 'epsilon' or 'v_prediction', not {prediction_type!r}"
            )
        self._setup()
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.timesteps: torch.Tensor | None = None
        self.prk_timesteps = self.plms_timesteps = np.array([], dtype=np.int64)  # until set_timesteps
        self._reset()

    def _reset(self) -> None:
        self.ets: list[torch.Tensor] = []  # the slopes eps seen so far (the last four)
        self.counter = 0  # UNet calls so far
        self.cur_sample: torch.Tensor | None = None  # x where the current PRK step (or the redo) started
        self.cur_model_output: torch.Tensor | float = 0  # running Runge-Kutta sum of slopes

    def scale_model_input(self, sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """The UNet's input is x_t itself for this sampler."""
        return sample

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """n steps -> the timesteps of each UNet call: 981, 961, 961, 941, ..., 1 for v1.5 (PLMS only);
        with PRK the last three strides of the ascending grid are visited at t, t - stride/2 (twice) first."""
        steps = self._spaced_timesteps(num_inference_steps)[::-1].astype(np.int64)  # ascending
        self.num_inference_steps = num_inference_steps
        if self.config.skip_prk_steps:
            self.prk_timesteps = np.array([], dtype=np.int64)
            self.plms_timesteps = np.concatenate([steps[:-1], steps[-2:-1], steps[-1:]])[::-1].copy()
        else:
            half = self.config.num_train_timesteps // num_inference_steps // 2
            starts = steps[-self.pndm_order :].repeat(2) + np.tile([0, half], self.pndm_order)
            self.prk_timesteps = starts[:-1].repeat(2)[1:-1][::-1].copy()  # t, t-h, t-h, t-2h per PRK step
            self.plms_timesteps = steps[:-3][::-1].copy()
        timesteps = np.concatenate([self.prk_timesteps, self.plms_timesteps]).astype(np.int64)
        self.timesteps = torch.from_numpy(timesteps).to(device)
        self._reset()

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, return_dict: bool = True):
        """One PRK stage while the warm-up lasts, one PLMS step after it."""
        if self.counter < len(self.prk_timesteps) and not self.config.skip_prk_steps:
            return self.step_prk(model_output, timestep, sample, return_dict)
        return self.step_plms(model_output, timestep, sample, return_dict)

    def step_prk(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, return_dict: bool = True
    ):
        """One of the four stages of a Runge-Kutta step; the fourth combines the slopes (1, 2, 2, 1) / 6."""
        self._check_ready()
        stage = self.counter % 4
        half = self.config.num_train_timesteps // self.num_inference_steps // 2
        prev_t = int(timestep) - (0 if self.counter % 2 else half)
        t = int(self.prk_timesteps[self.counter // 4 * 4])  # every stage steps from the PRK step's start
        if stage == 0:
            self.ets.append(model_output)
            self.cur_sample = sample
        if stage < 3:
            self.cur_model_output = self.cur_model_output + RUNGE_KUTTA[stage] * model_output
        else:
            model_output = self.cur_model_output + RUNGE_KUTTA[3] * model_output
            self.cur_model_output = 0
        start = self.cur_sample if self.cur_sample is not None else sample
        prev_sample = self._get_prev_sample(start, t, prev_t, model_output)
        self.counter += 1
        return self._output(prev_sample, None, return_dict)

    def step_plms(
        self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, return_dict: bool = True
    ):
        """One PLMS update from the stored slopes (Adams-Bashforth of order up to 4)."""
        self._check_ready()
        if not self.config.skip_prk_steps and len(self.ets) < 3:
            raise ValueError(
                "PNDMScheduler.step_plms needs the slopes of the 12 PRK calls first: use step() "
                "(or skip_prk_steps=True)"
            )
        stride = self.config.num_train_timesteps // self.num_inference_steps
        t, prev_t = int(timestep), int(timestep) - stride
        if self.counter == 1:
            # the repeated timestep: redo the first step with the mean of both slopes (Heun-like)
            t, prev_t = t + stride, t
        else:
            self.ets = [*self.ets[-3:], model_output]
        if len(self.ets) == 1 and self.counter == 0:
            eps, self.cur_sample = model_output, sample
        elif len(self.ets) == 1 and self.counter == 1:
            eps = (model_output + self.ets[-1]) / 2
            sample, self.cur_sample = self.cur_sample, None
        else:
            coeffs = ADAMS_BASHFORTH[min(len(self.ets), 4)]  # the newest slopes first
            eps = sum(c * e for c, e in zip(coeffs, reversed(self.ets), strict=False))
        prev_sample = self._get_prev_sample(sample, t, prev_t, eps)
        self.counter += 1
        return self._output(prev_sample, None, return_dict)

    def _get_prev_sample(
        self, sample: torch.Tensor, t: int, prev_t: int, model_output: torch.Tensor
    ) -> torch.Tensor:
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        _, eps = predict_x0_and_eps(
            model_output, sample, a_t**0.5, (1 - a_t) ** 0.5, self.config.prediction_type
        )
        denominator = a_t * (1 - a_prev) ** 0.5 + (a_t * (1 - a_t) * a_prev) ** 0.5
        return (a_prev / a_t) ** 0.5 * sample - (a_prev - a_t) * eps / denominator
