"""Safetensors files, config.json and strict state-dict loading: what every model load goes through."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.overrides import TorchFunctionMode

from minisd.errors import NonFiniteError, UserError

WEIGHT_NAMES = ("diffusion_pytorch_model", "model")  # diffusers, transformers


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, corrupt or of another architecture."""


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a .safetensors file, turning low-level failures into an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} ({size:,} bytes) is not a readable safetensors file: {e}. "
            "It may be truncated (an interrupted download) or corrupt; download it again."
        ) from e
    check_finite(state, path)
    return state


def check_finite(state_dict: dict[str, torch.Tensor], name: str | os.PathLike) -> None:
    """Raise a NonFiniteError naming the file and tensor when a weight holds NaN or inf (corrupt bytes).

    One reduction per tensor, its min and max (NaN and inf show there), about a second for v1.5's
    UNet on one core: `isfinite` on fp16 takes ~30 s."""
    for key, tensor in state_dict.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        if not all(torch.isfinite(bound) for bound in torch.aminmax(tensor)):
            bad = (~torch.isfinite(tensor)).sum().item()
            raise NonFiniteError(
                f"{name}: tensor {key} {tuple(tensor.shape)} holds {bad:,} NaN/inf values; the file is "
                "corrupt (damaged bytes or a failed conversion): download or convert it again"
            )


def read_config(folder: str | os.PathLike) -> dict:
    """Read `config.json` (models) or `scheduler_config.json` (schedulers) from a folder."""
    folder = Path(folder)
    for name in ("config.json", "scheduler_config.json"):
        if (folder / name).is_file():
            config = read_json(folder / name)
            if not isinstance(config, dict):
                raise UserError(
                    f"{folder / name} holds a JSON {type(config).__name__}, not an object of settings"
                )
            return config
    if not folder.exists():
        raise FileNotFoundError(f"no such folder: {folder}")
    raise FileNotFoundError(f"{folder} has no config.json: is it a diffusers/transformers model folder?")


def read_json(path: str | os.PathLike) -> object:
    """Parse a JSON file; invalid JSON raises a UserError naming the file, line and column."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not a text (UTF-8) file: is it the right file?") from e
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): fix or replace it"
        ) from e


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


class _SkipMetaInit(TorchFunctionMode):
    """Turns the random initialisers into no-ops on meta tensors: they hold no values to fill, and
    `normal_` on the meta device imports torch's compiler stack on first use (seconds)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensor = args[0] if args else kwargs.get("tensor")  # Tensor.normal_(...) or nn.init.normal_(tensor=)
        if getattr(func, "__name__", "") in ("normal_", "uniform_") and tensor.is_meta:
            return tensor
        return func(*args, **kwargs)


@contextlib.contextmanager
def empty_weights() -> Iterator[None]:
    """Build modules on the meta device: shapes and dtypes only, no memory and no random
    initialisation; `load_into` then puts the checkpoint's own tensors in place."""
    with torch.device("meta"), _SkipMetaInit():
        yield


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
