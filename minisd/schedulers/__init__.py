"""Noise schedulers (samplers) with diffusers' names and config keys (chapter 03).

scheduler = get_scheduler("dpm++2m_karras", scheduler_config)   # or DDIMScheduler.from_config(...)
scheduler.set_timesteps(25)
x = torch.randn(shape, generator=g) * scheduler.init_noise_sigma
for t in scheduler.timesteps:
    eps = unet(scheduler.scale_model_input(x, t), t, text).sample
    x = scheduler.step(eps, t, x, generator=g).prev_sample   # diffusers' output convention
"""

from __future__ import annotations

from minisd.schedulers.common import (
    SNR,
    karras_sigmas,
    make_betas,
    predict_x0_and_eps,
    randn_tensor,
    rescale_zero_terminal_snr,
    sigmas_from_alphas_cumprod,
    spaced_timesteps,
)
from minisd.schedulers.ddim import DDIMScheduler
from minisd.schedulers.ddpm import DDPMScheduler
from minisd.schedulers.dpm_solver import DPMSolverMultistepScheduler
from minisd.schedulers.euler import EulerDiscreteScheduler
from minisd.schedulers.euler_ancestral import EulerAncestralDiscreteScheduler
from minisd.schedulers.lms import LMSDiscreteScheduler
from minisd.schedulers.pndm import PNDMScheduler
from minisd.schedulers.scheduling_utils import (
    SchedulerMixin,
    SchedulerOutput,
    SchedulerOutputWithX0,
)

# short name -> (class, config overrides); the names UIs and the CLI use
SCHEDULERS: dict[str, tuple[type[SchedulerMixin], dict]] = {
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {}),
    "dpm++2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "lms": (LMSDiscreteScheduler, {}),
    "lms_karras": (LMSDiscreteScheduler, {"use_karras_sigmas": True}),
}
CLASSES = {cls.__name__: cls for cls, _ in SCHEDULERS.values()}


def get_scheduler(name: str, config: dict | None = None, **overrides) -> SchedulerMixin:
    """Build a scheduler by short name ("ddim", "euler_a", "dpm++2m_karras", ...) or diffusers class
    name ("PNDMScheduler") from any scheduler_config.json dict (e.g. SD v1.5's PNDM config)."""
    if name in SCHEDULERS:
        cls, preset = SCHEDULERS[name]
    elif name in CLASSES:
        cls, preset = CLASSES[name], {}
    else:
        known = ", ".join([*SCHEDULERS, *CLASSES])
        raise ValueError(f"unknown scheduler {name!r}; known: {known}")
    return cls.from_config(config or {}, **preset, **overrides)


__all__ = [
    "SNR",
    "SCHEDULERS",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerAncestralDiscreteScheduler",
    "EulerDiscreteScheduler",
    "LMSDiscreteScheduler",
    "PNDMScheduler",
    "SchedulerMixin",
    "SchedulerOutput",
    "SchedulerOutputWithX0",
    "get_scheduler",
    "karras_sigmas",
    "make_betas",
    "predict_x0_and_eps",
    "randn_tensor",
    "rescale_zero_terminal_snr",
    "sigmas_from_alphas_cumprod",
    "spaced_timesteps",
]
