"""The maths every sampler shares: beta schedules, alpha_bar, SNR, sigmas, timestep spacing (chapter 03).

A diffusion model is trained on x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps for
t = 0 ... T-1, where alpha_bar_t = prod_{s<=t} (1 - beta_s). Samplers differ only in how they walk
back from pure noise to x_0; this module holds what they have in common, written once:

- `make_betas`, `SNR`, `sigmas_from_alphas_cumprod` (the "variance exploding" view x = x_0 + sigma * eps),
- `spaced_timesteps` (which T-grid points an n-step sampler visits: leading / trailing / linspace),
- `karras_sigmas`, `sigma_to_t`, `predict_x0_and_eps` (epsilon / v / sample parametrizations),
- `randn_tensor` (noise drawn the way diffusers draws it, so seeded runs match), `threshold_sample`.
The scheduler base classes (config, step outputs, step index) are in `scheduling_utils.py`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
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
    if beta_schedule == "sigmoid":
        return (
            torch.sigmoid(torch.linspace(-6, 6, num_train_timesteps)) * (beta_end - beta_start) + beta_start
        )
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}: choose one of {', '.join(BETA_SCHEDULES)}")


def SNR(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) of x_t."""
    return alphas_cumprod / (1 - alphas_cumprod)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> np.ndarray:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) = 1 / sqrt(SNR_t).

    In these units x_t / sqrt(alpha_bar_t) = x_0 + sigma_t eps.
    """
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).numpy()


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


def exponential_sigmas(sigma_min: float, sigma_max: float, n: int) -> np.ndarray:
    """n noise levels evenly spaced in log(sigma), from sigma_max down to sigma_min."""
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))


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


def threshold_sample(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding (Imagen): clip each sample to its `ratio` quantile s of |x0| (s in [1, max_value])
    and divide by s, so saturated pixels are pulled in rather than clipped flat."""
    flat = x0.float().reshape(x0.shape[0], -1)  # [B, C*H*W]; quantile needs float32
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(1, max_value)[:, None]  # [B, 1]
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(x0.dtype)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so the last timestep has zero SNR (Lin et al. 2023)."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alpha_bar = root**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas
