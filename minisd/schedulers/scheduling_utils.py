"""What every sampler shares: its config, step outputs, timestep spacing and step index (chapter 03).

A sampler file holds its update equations; this module holds the rest, with diffusers' conventions so
code written for diffusers runs unchanged:

- `@register_to_config` records the constructor's arguments as `scheduler.config` (a dict whose keys also
  read as attributes), noting which were left at their defaults (`_use_default_values`), so a config
  handed to another class (`EulerDiscreteScheduler.from_config(pndm.config)`) takes that class's defaults;
- `from_config` / `from_pretrained` / `save_config` / `save_pretrained` (scheduler_config.json),
  `compatibles`;
- `step(...)` returns a NamedTuple (`out.prev_sample` and `out[0]` both work; `return_dict=False` a tuple);
- the sigma samplers' base (Euler, Euler ancestral, LMS) is in `scheduling_sigma.py`.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from minisd.loading.configs import check_config_types
from minisd.loading.files import write_text
from minisd.loading.state_dict import read_json
from minisd.schedulers.common import (
    PREDICTION_TYPES,
    broadcast_to,
    make_betas,
    rescale_zero_terminal_snr,
    spaced_timesteps,
    threshold_sample,
)

CONFIG_NAME = "scheduler_config.json"

# diffusers options minisd does not implement: accepted at their default value, refused at any other
UNIMPLEMENTED = (
    "use_beta_sigmas",
    "use_lu_lambdas",
    "use_flow_sigmas",
    "use_dynamic_shifting",
    "flow_shift",
    "time_shift_type",
)


class SchedulerOutput(NamedTuple):
    """What `step` returns for PNDM and DPM-Solver."""

    prev_sample: torch.Tensor  # x at the next (lower-noise) timestep

    def values(self) -> tuple:  # diffusers' outputs are also dicts
        return tuple(self)


class SchedulerOutputWithX0(NamedTuple):
    """What `step` returns for DDPM, DDIM, Euler, Euler ancestral and LMS."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor  # the step's estimate of the clean sample x_0

    def values(self) -> tuple:
        return tuple(self)


class SchedulerConfig(dict):
    """The scheduler's config: a dict (pass it to any `from_config`) whose keys also read as attributes."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def register_to_config(init):
    """Decorate a scheduler's `__init__`: its arguments (defaults filled in) become `self.config`."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        hidden = {k: kwargs.pop(k) for k in list(kwargs) if k.startswith("_")}
        bound = signature.bind(self, *args, **kwargs)
        passed = set(bound.arguments) - {"self"}
        bound.apply_defaults()
        config = {k: v for k, v in bound.arguments.items() if k != "self"}
        if defaults := sorted(set(config) - passed):
            config["_use_default_values"] = defaults
        self.config = SchedulerConfig({**hidden, **config})
        init(self, *args, **kwargs)

    return wrapper


def _json_value(value):
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    return value


class SchedulerMixin:
    """Config handling, the beta/alpha_bar tables, thresholding, the step index and `add_noise`.

    A subclass lists its config keys (diffusers' names, order and defaults) as `__init__` parameters,
    decorates `__init__` with `@register_to_config` and calls `self._setup()` before its own tables.
    """

    config: SchedulerConfig
    config_name = CONFIG_NAME
    order = 1
    init_noise_sigma = 1.0
    _unknown_timestep_is_last = False  # DPM-Solver: a timestep not in the schedule means the last step
    _uses_sigmas = False  # samplers that divide by sigma keep it finite under zero terminal SNR

    # ---- construction -------------------------------------------------------------------------------
    def _setup(self) -> None:
        """Refuse unimplemented options, then build betas, alphas and alpha_bar (the cumulative product)."""
        c, defaults = self.config, self._init_defaults()
        for key in UNIMPLEMENTED:
            if key in defaults and c[key] != defaults[key]:
                raise NotImplementedError(
                    f"{type(self).__name__}: minisd does not implement {key}={c[key]!r}; "
                    f"leave it at {defaults[key]!r}"
                )
        if c.prediction_type not in (*PREDICTION_TYPES, "original_sample"):
            raise ValueError(
                f"unknown prediction_type {c.prediction_type!r}: choose one of {PREDICTION_TYPES}"
            )
        betas = make_betas(c.beta_schedule, c.beta_start, c.beta_end, c.num_train_timesteps, c.trained_betas)
        self.betas = rescale_zero_terminal_snr(betas) if self._option("rescale_betas_zero_snr") else betas
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # alpha_bar_t, [T]
        if self._uses_sigmas and self._option("rescale_betas_zero_snr"):
            self.alphas_cumprod[-1] = 2**-24
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None
        self._begin_index: int | None = None

    @classmethod
    def _init_defaults(cls) -> dict:
        params = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in params.items() if k != "self"}

    def _option(self, key: str):
        """A config option of this class (None when the class has no such option, whatever a config
        inherited from another scheduler holds under that key)."""
        return self.config[key] if key in self._init_defaults() else None

    def register_to_config(self, **kwargs) -> None:
        """Set config entries (used where an option falls back to another value)."""
        self.config.update(kwargs)

    # ---- config files -------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict | None = None, return_unused_kwargs: bool = False, **kwargs):
        """Build from a scheduler config (any scheduler's: keys this class lacks stay in its config,
        keys the source left at their defaults take this class's defaults); kwargs override."""
        config = dict(config or {})
        defaulted = set(config.pop("_use_default_values", []))
        config = {k: v for k, v in config.items() if k not in defaulted and k not in ("_class_name",)}
        config.pop("_diffusers_version", None)
        config.update(kwargs)
        params = cls._init_defaults()
        init_kwargs = {k: v for k, v in config.items() if k in params}
        check_config_types(cls, init_kwargs)
        unused = {k: v for k, v in config.items() if k not in params}
        scheduler = cls(**init_kwargs)
        scheduler.config.update({k: v for k, v in unused.items() if k not in kwargs})
        return (scheduler, unused) if return_unused_kwargs else scheduler

    @classmethod
    def load_config(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        return_unused_kwargs: bool = False,
        return_commit_hash: bool = False,
        **kwargs,
    ):
        """Read scheduler_config.json from a folder (`subfolder=` inside it), or from a Hub id when
        huggingface_hub is installed and online."""
        if return_commit_hash:
            raise NotImplementedError("minisd does not track Hub commit hashes")
        subfolder = kwargs.pop("subfolder", None)
        folder = Path(pretrained_model_name_or_path, subfolder or "")
        if folder.is_dir():
            config = read_json(folder / CONFIG_NAME)
        else:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(str(pretrained_model_name_or_path), CONFIG_NAME, subfolder=subfolder)
            config = read_json(path)
        return (config, kwargs) if return_unused_kwargs else config

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None = None,
        subfolder: str | None = None,
        return_unused_kwargs: bool = False,
        **kwargs,
    ):
        """Build from a folder with scheduler_config.json (a pipeline folder: subfolder="scheduler")."""
        config = cls.load_config(pretrained_model_name_or_path, subfolder=subfolder)
        return cls.from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def save_config(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> None:
        """Write scheduler_config.json in diffusers' layout (arrays such as trained_betas as lists)."""
        if push_to_hub:
            raise NotImplementedError("minisd does not push to the Hub: upload the saved folder yourself")
        config = {k: _json_value(v) for k, v in self.config.items() if k != "_use_default_values"}
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        text = json.dumps({"_class_name": type(self).__name__, **config}, indent=2, sort_keys=True)
        write_text(Path(save_directory) / CONFIG_NAME, text + "\n")

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> None:
        """Same as `save_config` (a scheduler has no weights)."""
        self.save_config(save_directory, push_to_hub, **kwargs)

    @property
    def compatibles(self) -> list[type[SchedulerMixin]]:
        """The scheduler classes that can be built from this one's config (all minisd samplers)."""
        from minisd import schedulers

        return [getattr(schedulers, name) for name in schedulers.CLASSES]

    # ---- timesteps and step index -------------------------------------------------------------------
    def _check_num_steps(self, num_inference_steps: int) -> None:
        T = self.config.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= T:
            raise ValueError(
                f"num_inference_steps must be an integer from 1 to num_train_timesteps={T}, "
                f"got {num_inference_steps!r}"
            )

    def _spaced_timesteps(self, num_inference_steps: int, rounded: bool = True) -> np.ndarray:
        """The config's spacing (leading / trailing / linspace) of an n-step run, descending."""
        self._check_num_steps(num_inference_steps)
        c = self.config
        return spaced_timesteps(
            num_inference_steps, c.num_train_timesteps, c.timestep_spacing, c.steps_offset, rounded
        )

    def _check_ready(self) -> None:
        if self.num_inference_steps is None:
            raise ValueError(
                f"{type(self).__name__}: the number of inference steps is None; "
                "call scheduler.set_timesteps(num_inference_steps) first"
            )

    @property
    def step_index(self) -> int | None:
        """Position of the current step in the schedule (None until the first step)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """First step index, set by pipelines that start part-way (image-to-image)."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def index_for_timestep(self, timestep, schedule_timesteps: torch.Tensor | None = None) -> int:
        """Position of `timestep` in the schedule (the second one where it repeats, like diffusers)."""
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        hits = (schedule.cpu() == torch.as_tensor(timestep).cpu()).nonzero()
        if len(hits) == 0:
            if self._unknown_timestep_is_last:
                return len(schedule) - 1
            raise ValueError(f"timestep {float(timestep)} is not in this scheduler's timesteps")
        return hits[1 if len(hits) > 1 else 0].item()

    def _init_step_index(self, timestep) -> None:
        if self._step_index is None:
            self._step_index = (
                self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index
            )

    # ---- shared pieces of the update ----------------------------------------------------------------
    def _clip_x0(self, x0: torch.Tensor) -> torch.Tensor:
        """Dynamic thresholding (Imagen) or plain clipping of the predicted x_0, as configured."""
        c = self.config
        if self._option("thresholding"):
            return threshold_sample(x0, c.dynamic_thresholding_ratio, c.sample_max_value)
        if self._option("clip_sample"):
            return x0.clamp(-c.clip_sample_range, c.clip_sample_range)
        return x0

    def _output(self, prev_sample: torch.Tensor, x0: torch.Tensor | None, return_dict: bool):
        out = SchedulerOutput(prev_sample) if x0 is None else SchedulerOutputWithX0(prev_sample, x0)
        return out if return_dict else tuple(out)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """The UNet's input at this step (unchanged for the alpha_bar-parametrized samplers)."""
        return sample

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """Forward process q(x_t | x_0): sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise, t per sample."""
        alpha_bar = self.alphas_cumprod.to(original_samples.device, original_samples.dtype)
        alpha_bar = broadcast_to(alpha_bar[timesteps.to(original_samples.device).long()], original_samples)
        return alpha_bar**0.5 * original_samples + (1 - alpha_bar) ** 0.5 * noise

    def get_velocity(
        self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor
    ) -> torch.Tensor:
        """The v-prediction target sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0 (SD 2.x)."""
        alpha_bar = self.alphas_cumprod.to(sample.device, sample.dtype)
        alpha_bar = broadcast_to(alpha_bar[timesteps.to(sample.device).long()], sample)
        return alpha_bar**0.5 * noise - (1 - alpha_bar) ** 0.5 * sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"
