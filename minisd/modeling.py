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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

WEIGHT_NAMES = ("diffusion_pytorch_model", "model")  # diffusers, transformers


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt or of another architecture."""


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a .safetensors file, turning low-level failures into an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} ({size:,} bytes) is not a readable safetensors file: {e}. "
            "It may be truncated (an interrupted download) or corrupt; download it again."
        ) from e


def read_config(folder: str | os.PathLike) -> dict:
    """Read `config.json` (models) or `scheduler_config.json` (schedulers) from a folder."""
    folder = Path(folder)
    for name in ("config.json", "scheduler_config.json"):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    if not folder.exists():
        raise FileNotFoundError(f"no such folder: {folder}")
    raise FileNotFoundError(f"{folder} has no config.json: is it a diffusers/transformers model folder?")


def find_weights(folder: str | os.PathLike, variant: str | None = None) -> Path:
    """The weights file of a model folder: `diffusion_pytorch_model[.variant].safetensors` or `model...`."""
    folder = Path(folder)
    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    for stem in WEIGHT_NAMES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    present = sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []
    raise FileNotFoundError(
        f"no {' or '.join(s + suffix for s in WEIGHT_NAMES)} in {folder} (found: {present or 'nothing'})"
        + ("" if variant else "; for fp16 files pass variant='fp16'")
    )


def _short(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Raise a CheckpointError listing missing keys, unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or shapes):
        return
    lines = [f"the checkpoint does not fit {type(model).__name__}:"]
    if missing:
        lines.append(f"  {len(missing)} missing keys: {_short(missing)}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected keys: {_short(unexpected)}")
    if shapes:
        lines.append(f"  {len(shapes)} shape mismatches: {_short(shapes, 6)}")
    lines.append("  Is it the right model and config (SD v1.x vs 2.x vs XL), and the diffusers layout?")
    raise CheckpointError("\n".join(lines))


def load_into(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> torch.nn.Module:
    """Check keys and shapes strictly, then copy the weights in and place the model."""
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=True, assign=True)
    if left := [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]:
        raise CheckpointError(f"{type(model).__name__} left uninitialised after loading: {_short(left)}")
    if dtype is not None or device is not None:
        model.to(device=device, dtype=dtype)
    return model.eval()


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
