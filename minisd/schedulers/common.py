"""The maths every sampler shares: beta schedules, alpha_bar, SNR, sigmas, timestep spacing (chapter 03).

A diffusion model is trained on x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps for
t = 0 ... T-1, where alpha_bar_t = prod_{s<=t} (1 - beta_s). Samplers differ only in how they walk
back from pure noise to x_0; this module holds what they have in common, written once:

- `make_betas`, `SNR`, `sigmas_from_alphas_cumprod` (the "variance exploding" view x = x_0 + sigma * eps),
- `spaced_timesteps` (which T-grid points an n-step sampler visits: leading / trailing / linspace),
- `karras_sigmas`, `sigma_to_t`, `predict_x0_and_eps` (epsilon / v / sample parametrizations),
- `randn_tensor` (noise drawn the way diffusers draws it, so seeded runs match),
- `SchedulerMixin` (config handling, `add_noise`, argument checks) and `SigmaSchedulerMixin`.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the cosine schedule alpha_bar(s) = cos^2((s + 0.008) / 1.008 * pi / 2) (Nichol & Dhariwal)."""

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    T = num_train_timesteps
    betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def make_betas(
    beta_schedule: str,
    beta_start: float,
    beta_end: float,
    num_train_timesteps: int,
    trained_betas: list[float] | None = None,
) -> torch.Tensor:
    """beta_t for t = 0 ... T-1 (float32, [T]). SD v1.5: scaled_linear, 0.00085 -> 0.012, T = 1000."""
    if trained_betas is not None:
        return torch.tensor(trained_betas, dtype=torch.float32)
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if beta_schedule == "scaled_linear":  # linear in sqrt(beta)
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return cosine_betas(num_train_timesteps)
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}: choose one of {', '.join(BETA_SCHEDULES)}")


def SNR(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) of x_t."""
    return alphas_cumprod / (1 - alphas_cumprod)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> np.ndarray:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) = 1 / sqrt(SNR_t).

    In these units x_t / sqrt(alpha_bar_t) = x_0 + sigma_t eps.
    """
    return np.array(((1 - alphas_cumprod) / alphas_cumprod) ** 0.5)


def spaced_timesteps(
    num_inference_steps: int,
    num_train_timesteps: int,
    spacing: str,
    steps_offset: int = 0,
    rounded: bool = True,
) -> np.ndarray:
    """The n training timesteps a sampler visits, descending (float64).

    leading: 0, T//n, 2T//n, ... plus steps_offset (v1.5: 981 ... 1 for n = 50); trailing: counted back
    from T-1 (starts at 999); linspace: evenly from 0 to T-1 (rounded for the discrete-time samplers).
    """
    n, T = num_inference_steps, num_train_timesteps
    if spacing == "linspace":
        timesteps = np.linspace(0, T - 1, n)
        timesteps = timesteps.round() if rounded else timesteps
    elif spacing == "leading":
        timesteps = np.arange(0, n) * (T // n) + steps_offset
    elif spacing == "trailing":
        timesteps = np.round(np.arange(T, 0, -T / n)) - 1
    else:
        raise ValueError(
            f"unknown timestep_spacing {spacing!r}: choose one of {', '.join(TIMESTEP_SPACINGS)}"
        )
    return np.sort(timesteps.astype(np.float64))[::-1].copy()


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022) noise levels: evenly spaced in sigma^(1/rho), from sigma_max down to sigma_min."""
    ramp = np.linspace(0, 1, n)
    return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """The (fractional) training timestep of each sigma, interpolating linearly in log(sigma)."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))  # [n]
    low = np.searchsorted(log_sigmas, log_sigma, side="right") - 1  # log_sigmas ascend with t
    low = low.clip(0, len(log_sigmas) - 2)
    w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1])).clip(0, 1)
    return (1 - w) * low + w * (low + 1)


def predict_x0_and_eps(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_t, sigma_t, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted clean sample x_0 and noise eps from x_t = alpha_t x_0 + sigma_t eps and the model output.

    epsilon: the model predicts eps; v_prediction: v = alpha_t eps - sigma_t x_0 (SD 2.x);
    sample: the model predicts x_0 itself.
    """
    if prediction_type == "epsilon":
        return (sample - sigma_t * model_output) / alpha_t, model_output
    if prediction_type == "v_prediction":
        return alpha_t * sample - sigma_t * model_output, alpha_t * model_output + sigma_t * sample
    if prediction_type == "sample":
        return model_output, (sample - alpha_t * model_output) / sigma_t
    raise ValueError(
        f"unknown prediction_type {prediction_type!r}: choose one of {', '.join(PREDICTION_TYPES)}"
    )


def randn_tensor(
    shape: tuple[int, ...],
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Gaussian noise drawn like diffusers: on the generator's device (a CPU generator draws on the CPU,
    then moves), one generator per batch item when given a list, so seeded runs match it exactly."""
    device = torch.device(device or "cpu")
    gens = generator if isinstance(generator, list) else [generator]
    draw_device = gens[0].device if gens[0] is not None and gens[0].device.type == "cpu" else device
    if len(gens) == 1:
        return torch.randn(shape, generator=gens[0], device=draw_device, dtype=dtype).to(device)
    one = (1, *shape[1:])
    return torch.cat([torch.randn(one, generator=g, device=draw_device, dtype=dtype) for g in gens]).to(
        device
    )


def broadcast_to(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample values [B] reshaped to [B, 1, 1, ...] so they broadcast against x."""
    return values.flatten().reshape(-1, *([1] * (x.ndim - 1)))


class SchedulerConfig(dict):
    """The scheduler's config: a dict (pass it to any `from_config`) whose keys also read as attributes."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# Options of diffusers' schedulers that minisd does not implement: refuse them rather than ignore them.
UNSUPPORTED = (
    "thresholding",
    "rescale_betas_zero_snr",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "sigma_min",
    "sigma_max",
)


class SchedulerMixin:
    """Config handling, the beta/alpha_bar tables, `add_noise` and argument checks of every scheduler.

    A subclass lists its config keys (diffusers' names and defaults) as `__init__` parameters,
    calls `self._setup(locals())` first and then builds its own tables.
    """

    config: SchedulerConfig
    order = 1
    num_inference_steps: int | None = None
    timesteps: torch.Tensor | None = None
    init_noise_sigma = 1.0

    def _setup(self, params: dict) -> None:
        self.config = SchedulerConfig({k: v for k, v in params.items() if k not in ("self", "__class__")})
        c = self.config
        if c.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction_type {c.prediction_type!r}: choose one of {PREDICTION_TYPES}"
            )
        self.betas = make_betas(
            c.beta_schedule, c.beta_start, c.beta_end, c.num_train_timesteps, c.trained_betas
        )
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # alpha_bar_t, [T]
        self.pred_original_sample: torch.Tensor | None = None  # x_0 predicted by the last step

    @classmethod
    def from_config(cls, config: dict, **overrides):
        """Build from scheduler_config.json keys (any scheduler's; unknown keys ignored)."""
        config = {**config, **overrides}
        if bad := [k for k in UNSUPPORTED if config.get(k)]:
            raise NotImplementedError(f"{cls.__name__}: minisd does not implement {bad}; set them to false")
        params = inspect.signature(cls.__init__).parameters
        return cls(**{k: v for k, v in config.items() if k in params and k != "self"})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike):
        """Build from a folder holding scheduler_config.json (a diffusers pipeline's `scheduler/`)."""
        from minisd.loading.state_dict import read_config

        return cls.from_config(read_config(folder))

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write scheduler_config.json in diffusers' layout."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, **self.config}
        (Path(folder) / "scheduler_config.json").write_text(json.dumps(config, indent=2))

    def _check_num_steps(self, num_inference_steps: int) -> None:
        T = self.config.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= T:
            raise ValueError(
                f"num_inference_steps must be an integer from 1 to num_train_timesteps={T}, "
                f"got {num_inference_steps!r}"
            )

    def _check_ready(self) -> None:
        if self.num_inference_steps is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() called before set_timesteps(): "
                "call scheduler.set_timesteps(num_inference_steps) first"
            )

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The UNet's input at this step (unchanged for the alpha_bar-parametrized samplers)."""
        return sample

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """Forward process q(x_t | x_0): sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise, t per sample."""
        alpha_bar = self.alphas_cumprod.to(original_samples.device, original_samples.dtype)
        alpha_bar = broadcast_to(alpha_bar[timesteps.to(original_samples.device).long()], original_samples)
        return alpha_bar**0.5 * original_samples + (1 - alpha_bar) ** 0.5 * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"


class SigmaSchedulerMixin(SchedulerMixin):
    """The samplers that walk x = x_0 + sigma * eps (Euler, Euler ancestral, LMS; k-diffusion's view).

    The UNet was trained on x_t = alpha x_0 + ..., so its input is x / sqrt(sigma^2 + 1), and the
    starting noise has standard deviation sigma_max (about 14.6 for v1.5).
    """

    def _set_sigma_schedule(self, timesteps: np.ndarray, device, use_karras_sigmas: bool = False) -> None:
        train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod)  # ascending in t, [T]
        sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
        if use_karras_sigmas:
            sigmas = karras_sigmas(sigmas[-1].item(), sigmas[0].item(), len(timesteps))
            timesteps = sigma_to_t(sigmas, np.log(train_sigmas))
        self.sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))  # [n + 1], ends at 0
        self.timesteps = torch.from_numpy(timesteps.astype(np.float32)).to(device)
        self.num_inference_steps = len(timesteps)
        self._step_index: int | None = None

    def _set_training_schedule(self) -> None:
        """Before set_timesteps: all T training timesteps (so add_noise works for any integer t)."""
        self._set_sigma_schedule(np.arange(self.config.num_train_timesteps - 1, -1, -1.0), None)
        self.num_inference_steps = None

    @property
    def init_noise_sigma(self) -> torch.Tensor:
        sigma_max = self.sigmas.max()
        return (
            sigma_max
            if self.config.timestep_spacing in ("linspace", "trailing")
            else (sigma_max**2 + 1) ** 0.5
        )

    def index_for_timestep(self, timestep) -> int:
        """Position of `timestep` in the schedule (the second one where it repeats, like diffusers)."""
        hits = (self.timesteps.cpu() == torch.as_tensor(timestep).cpu()).nonzero()
        if len(hits) == 0:
            raise ValueError(f"timestep {float(timestep)} is not in this scheduler's timesteps")
        return hits[1 if len(hits) > 1 else 0].item()

    def _current_sigma(self, timestep) -> torch.Tensor:
        self._check_ready()
        if self._step_index is None:
            self._step_index = self.index_for_timestep(timestep)
        return self.sigmas[self._step_index]

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """x / sqrt(sigma^2 + 1): back to the alpha_bar-scaled input the UNet was trained on."""
        return sample / (self._current_sigma(timestep) ** 2 + 1) ** 0.5

    def _predict_x0(self, model_output: torch.Tensor, sample: torch.Tensor, sigma) -> torch.Tensor:
        alpha_t = 1 / (sigma**2 + 1) ** 0.5  # the VP view of the same point: x_vp = alpha_t x
        x0, _ = predict_x0_and_eps(
            model_output, sample * alpha_t, alpha_t, sigma * alpha_t, self.config.prediction_type
        )
        return x0

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """x_0 + sigma_t noise, sigma_t taken from this schedule (the timesteps must be in it)."""
        sigmas = self.sigmas.to(original_samples.device, original_samples.dtype)
        sigma = sigmas[[self.index_for_timestep(t) for t in timesteps]]
        return original_samples + broadcast_to(sigma, original_samples) * noise
