"""The loading base every model uses: configs, safetensors files, strict key checks.

Each model class (CLIPTextModel, UNet2DConditionModel, AutoencoderKL, ...) inherits `ModelMixin`,
which gives it `from_config(dict)`, `from_pretrained(folder, dtype, device, variant)` and
`save_pretrained(folder)` on the official diffusers / transformers folder layout.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from minisd.loading.state_dict import find_weights, load_into, load_safetensors, read_config


class ModelMixin(torch.nn.Module):
    """Config handling and the official folder layout for minisd's models.

    A subclass takes its config keys as keyword arguments of `__init__` (unknown keys are
    ignored, like diffusers does) and may override `convert_state_dict` to accept other key
    spellings (e.g. transformers 5 without the `text_model.` prefix).
    """

    config: dict
    weights_name = "diffusion_pytorch_model"

    @classmethod
    def from_config(cls, config: dict, **overrides):
        """Build the model (random weights) from official `config.json` keys."""
        config = {**config, **overrides}
        params = inspect.signature(cls.__init__).parameters
        kwargs = {k: v for k, v in config.items() if k in params and k != "self"}
        model = cls(**kwargs)
        model.config = {k: v for k, v in config.items() if not k.startswith("_")}
        return model

    @classmethod
    def convert_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map other key spellings of this model to ours (identity here)."""
        return state_dict

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        variant: str | None = None,
    ):
        """Load from a diffusers/transformers folder: config.json + weights in safetensors."""
        config = read_config(folder)
        with torch.device("meta"):
            model = cls.from_config(config)
        state_dict = cls.convert_state_dict(load_safetensors(find_weights(folder, variant)))
        return load_into(model, state_dict, dtype=dtype, device=device)

    def save_pretrained(self, folder: str | os.PathLike, variant: str | None = None) -> None:
        """Write config.json and the weights in the official layout."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, **getattr(self, "config", {})}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        name = f"{self.weights_name}.{variant}.safetensors" if variant else f"{self.weights_name}.safetensors"
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(folder / name))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
