"""Safetensors files, config.json and strict state-dict loading: what every model load goes through."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

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
