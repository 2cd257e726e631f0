"""ModelMixin, the base of every model: its config and the official folder layout.

Each model class (CLIPTextModel, UNet2DConditionModel, AutoencoderKL, ...) inherits `ModelMixin`,
which gives it `from_config(dict)`, `from_pretrained(folder, dtype=, device=, variant=)` and
`save_pretrained(folder)` on the official diffusers / transformers folder layout.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from minisd.loading.configs import check_config_types
from minisd.loading.files import atomic_path, write_text
from minisd.loading.state_dict import empty_weights, find_weights, load_into, load_safetensors, read_config


class ModelConfig(dict):
    """A model's config: a dict (pass it to `from_config`) whose keys also read as attributes,
    like diffusers' `unet.config.sample_size`."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def reject_unsupported(model: str, options: dict[str, tuple[object, object]]) -> None:
    """Raise naming every option set away from the one value minisd implements.

    `options` maps a config key to (given value, the value minisd implements); lists from JSON
    compare equal to tuples.
    """

    def differs(value: object, want: object) -> bool:
        if want is None or value is None:
            return value is not want
        return (tuple(value) if isinstance(value, list) else value) != want

    bad = [f"{k}={_short(v)}" for k, (v, want) in options.items() if differs(v, want)]
    if bad:
        raise NotImplementedError(
            f"{model}: minisd does not implement {', '.join(bad)}; leave these options at their defaults"
        )


def _short(value: object) -> str:
    return f"<tensor {tuple(value.shape)}>" if isinstance(value, torch.Tensor) else repr(value)


class ModelMixin(torch.nn.Module):
    """Config handling and the official folder layout for minisd's models.

    A subclass takes its config keys as keyword arguments of `__init__` (unknown keys are
    ignored, like diffusers does) and may override `convert_state_dict` to accept other key
    spellings (e.g. transformers 5 without the `text_model.` prefix). However a model is built,
    `model.config` holds the arguments of its `__init__`, defaults filled in.
    """

    config: ModelConfig
    weights_name = "diffusion_pytorch_model"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__init__

        @functools.wraps(init)
        def init_and_record_config(self, *args, **kwargs):
            init(self, *args, **kwargs)
            if type(self) is cls:  # the outermost __init__ records the config
                bound = inspect.signature(init).bind(self, *args, **kwargs)
                bound.apply_defaults()
                self.config = ModelConfig(list(bound.arguments.items())[1:])

        cls.__init__ = init_and_record_config

    @classmethod
    def from_config(cls, config: dict | None = None, return_unused_kwargs: bool = False, **kwargs):
        """Build the model (random weights) from official `config.json` keys; `kwargs` override them.

        `model.config` holds every constructor key (defaults filled in), like diffusers'. With
        `return_unused_kwargs`, returns (model, the keys the constructor does not take).
        """
        if not isinstance(config, dict | None):
            raise TypeError(
                f"{cls.__name__}.from_config takes a dict of settings, got {type(config).__name__}"
            )
        config = {k: v for k, v in {**(config or {}), **kwargs}.items() if not k.startswith("_")}
        params = inspect.signature(cls.__init__).parameters
        check_config_types(cls, {k: v for k, v in config.items() if k in params})
        model = cls(**{k: v for k, v in config.items() if k in params and k != "self"})
        unused = {k: v for k, v in config.items() if k not in params}
        model.config.update(unused)  # kept, so that save_pretrained writes them back
        return (model, unused) if return_unused_kwargs else model

    @classmethod
    def convert_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map other key spellings of this model to ours (identity here)."""
        return state_dict

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        variant: str | None = None,
        torch_dtype: torch.dtype | None = None,
    ):
        """Load from a diffusers/transformers folder: config.json + weights in safetensors.

        `torch_dtype` is diffusers' older spelling of `dtype`.
        """
        folder = pretrained_model_name_or_path
        dtype = _one_dtype(dtype, torch_dtype)
        config = read_config(folder)
        with empty_weights():
            model = cls.from_config(config)
        state_dict = cls.convert_state_dict(load_safetensors(find_weights(folder, variant)))
        return load_into(model, state_dict, dtype=dtype, device=device)

    def save_pretrained(self, folder: str | os.PathLike, variant: str | None = None) -> None:
        """Write config.json and the weights in the official layout."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, **getattr(self, "config", {})}
        write_text(folder / "config.json", json.dumps(config, indent=2))
        name = f"{self.weights_name}.{variant}.safetensors" if variant else f"{self.weights_name}.safetensors"
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(folder / name) as tmp:
            save_file(tensors, str(tmp))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _one_dtype(dtype: torch.dtype | None, torch_dtype: torch.dtype | None) -> torch.dtype | None:
    """`dtype` or diffusers' older `torch_dtype`; both at once must agree."""
    for name, value in (("dtype", dtype), ("torch_dtype", torch_dtype)):
        if value is not None and not isinstance(value, torch.dtype):
            raise TypeError(f"{name} must be a torch.dtype such as torch.float16, got {value!r}")
    if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
        raise ValueError(f"dtype={dtype} and torch_dtype={torch_dtype} disagree: give one of them")
    return dtype if dtype is not None else torch_dtype
