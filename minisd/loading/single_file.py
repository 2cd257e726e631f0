"""Weight formats: the original single-file checkpoint <-> the diffusers folder layout (chapter 06).

The original Stable Diffusion code (CompVis `ldm`) saved the whole model as one state dict:
- `model.diffusion_model.*`  the UNet, as `input_blocks` / `middle_block` / `output_blocks`;
- `first_stage_model.*`      the VAE, its attention projections stored as 1x1 convolutions;
- `cond_stage_model.transformer.text_model.*`  the CLIP text encoder (same names as transformers);
- `model_ema.*`              in full (non-pruned) checkpoints, an EMA copy of the UNet with dots
  removed from the names (`model_ema.diffusion_modelinput_blocks00weight`).
diffusers splits it into unet/, vae/, text_encoder/ folders with its own names. The key maps below
are built from each component's config (block counts, layers per block), not written out as a table.

EMA choice: when a checkpoint holds an EMA copy of the UNet (more than 100 `model_ema.*` keys, the
test diffusers uses), minisd loads the EMA weights by default: they are the ones the authors
evaluated and released for inference (`v1-5-pruned-emaonly` stores exactly them under
`model.diffusion_model.*`). diffusers' `from_single_file` keeps the raw training weights instead
(its `extract_ema=False`); pass `use_ema=False` for that.
"""

from __future__ import annotations

import os
import pickle
import zipfile
import zlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from minisd.loading.files import atomic_path
from minisd.loading.key_maps import (
    text_encoder_keys,
    unet_from_original,
    unet_to_original,
    vae_from_original,
    vae_to_original,
)
from minisd.loading.state_dict import CheckpointError, check_finite, load_safetensors

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
EMA_PREFIX = "model_ema."
EMA_MIN_KEYS = 100  # diffusers' threshold for "this checkpoint carries EMA weights"
FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def ema_key(original_key: str) -> str:
    """The EMA copy's name of a UNet key: `model_ema.` + the name without `model.` and dots."""
    return EMA_PREFIX + original_key.removeprefix("model.").replace(".", "")


def detect_architecture(state_dict: dict) -> str:
    """'sd1', 'sdxl', 'sd2', 'diffusers' (one component in diffusers names) or 'unknown'."""
    keys = list(state_dict)
    if any(k.startswith("conditioner.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    if any(k.startswith(UNET_PREFIX) for k in keys):
        return "sd1"
    if any(
        k.startswith(("down_blocks.", "encoder.down_blocks.", "text_model.", "embeddings.")) for k in keys
    ):
        return "diffusers"
    return "unknown"


def check_sd1(state_dict: dict, name: str) -> None:
    """Raise a CheckpointError naming the architecture when `state_dict` is not an SD v1.x checkpoint."""
    kind = detect_architecture(state_dict)
    why = {
        "sdxl": "an SDXL checkpoint (keys conditioner.*: two text encoders)",
        "sd2": "an SD 2.x checkpoint (keys cond_stage_model.model.*: an OpenCLIP text encoder)",
        "diffusers": "one component in diffusers names, not a whole original checkpoint; "
        "load a diffusers folder (with model_index.json) instead",
        "unknown": f"not a Stable Diffusion checkpoint (first keys: {', '.join(list(state_dict)[:4])})",
    }
    if kind != "sd1":
        raise CheckpointError(f"{name} is {why[kind]}. minisd implements Stable Diffusion v1.x only.")
    missing = [p for p in (VAE_PREFIX, TEXT_PREFIX) if not any(k.startswith(p) for k in state_dict)]
    if missing:
        raise CheckpointError(f"{name} has a UNet but no {' or '.join(p + '*' for p in missing)} weights.")


def unet_config_for(state_dict: dict, unet_config: dict) -> dict:
    """`unet_config` with the input channels of the checkpoint's first convolution: 9 for an inpainting
    model (latents, mask, masked-picture latents), 4 for text-to-image."""
    first = state_dict.get(UNET_PREFIX + "input_blocks.0.0.weight")  # [320, in_channels, 3, 3]
    return unet_config if first is None else {**unet_config, "in_channels": int(first.shape[1])}


def original_to_diffusers(
    state_dict: dict,
    unet_config: dict,
    vae_config: dict,
    use_ema: bool | None = None,
    name: str = "checkpoint",
) -> dict[str, dict[str, torch.Tensor]]:
    """Split an original SD v1.x state dict into diffusers-named {"unet", "vae", "text_encoder"} dicts.

    `use_ema=None` takes the UNet's EMA weights when the checkpoint has them (see the module docstring).
    """
    check_sd1(state_dict, name)
    unet = {k: v for k, v in state_dict.items() if k.startswith(UNET_PREFIX)}
    has_ema = sum(k.startswith(EMA_PREFIX) for k in state_dict) > EMA_MIN_KEYS
    if use_ema is None:
        use_ema = has_ema
    if use_ema:
        if not has_ema:
            raise CheckpointError(f"{name} holds no EMA weights (model_ema.*); load it with use_ema=False.")
        if missing := [k for k in unet if ema_key(k) not in state_dict]:
            raise CheckpointError(
                f"{name} lacks the EMA copies of {len(missing)} UNet weights, e.g. {missing[0]}"
            )
        unet = {k: state_dict[ema_key(k)] for k in unet}
    return {
        "unet": unet_from_original({k.removeprefix(UNET_PREFIX): v for k, v in unet.items()}, unet_config),
        "vae": vae_from_original(
            {k.removeprefix(VAE_PREFIX): v for k, v in state_dict.items() if k.startswith(VAE_PREFIX)},
            vae_config,
        ),
        "text_encoder": text_encoder_keys(
            {k.removeprefix(TEXT_PREFIX): v for k, v in state_dict.items() if k.startswith(TEXT_PREFIX)}
        ),
    }


def diffusers_to_original(components: dict[str, dict], unet_config: dict, vae_config: dict) -> dict:
    """{"unet", "vae", "text_encoder"} diffusers state dicts -> one original-layout state dict."""
    out = {UNET_PREFIX + k: v for k, v in unet_to_original(components["unet"], unet_config).items()}
    out |= {VAE_PREFIX + k: v for k, v in vae_to_original(components["vae"], vae_config).items()}
    out |= {TEXT_PREFIX + k: v for k, v in text_encoder_keys(components["text_encoder"]).items()}
    return out


# ---------------------------------------------------------------------------- files


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a `.safetensors` or `.ckpt` state dict on the CPU; a `state_dict` wrapper is unpacked.

    `.ckpt` files are pickles: they are read with `torch.load(weights_only=True)`, which refuses to
    run code, so a file holding anything but tensors and plain containers is rejected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        state = load_safetensors(path)
    elif path.suffix in FILE_SUFFIXES:
        check_zip_crcs(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "GLOBAL" not in str(e):  # not a refused object: bytes that are no pickle at all
                raise CheckpointError(
                    f"{path} ({path.stat().st_size:,} bytes) is not a readable checkpoint: it may be "
                    "truncated or corrupt; download it again"
                ) from e
            raise CheckpointError(
                f"{path} holds pickled Python objects besides tensors, and minisd never runs pickled code "
                f"(torch.load(weights_only=True) refused: {str(e).splitlines()[0]}). "
                "Use a .safetensors version of the model."
            ) from e
        except Exception as e:  # damaged bytes make the unpickler fail in any of a dozen ways
            raise CheckpointError(
                f"{path} ({path.stat().st_size:,} bytes) is not a readable checkpoint: {e}. "
                "It may be truncated (an interrupted download) or corrupt; download it again."
            ) from e
        while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint type {path.suffix!r}; expected one of {FILE_SUFFIXES}"
        )
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if path.suffix != ".safetensors":  # load_safetensors checked its own
        check_finite(state, path)
    return state


def check_zip_crcs(path: Path) -> None:
    """Verify the CRC of every member of a zip-format `.ckpt` (torch.load does not), naming a bad one."""
    if not zipfile.is_zipfile(path):
        return  # an old-style pickle, or not a checkpoint: torch.load reports it
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise CheckpointError(f"{path} is a damaged zip archive ({e}): download it again") from e
    if bad is not None:
        raise CheckpointError(
            f"{path}: the data of {bad} fails its checksum (CRC): the file is corrupt; download it again"
        )


def save_checkpoint(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write a state dict as `.safetensors`, or as `.ckpt` wrapped in {"state_dict": ...} like ldm."""
    path = Path(path)
    if path.suffix not in FILE_SUFFIXES:
        raise CheckpointError(f"{path}: write .safetensors (recommended) or .ckpt")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:  # a full disk leaves the old file, never a fragment
        try:
            if path.suffix == ".safetensors":
                save_file(tensors, str(tmp))
            else:
                torch.save({"state_dict": tensors}, tmp)
        except (RuntimeError, SafetensorError) as e:  # how torch and safetensors report a failed write
            raise OSError(f"writing {path} failed ({e}): is the disk full?") from e
