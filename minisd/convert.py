"""Whole-model conversion for `python -m minisd convert` (chapter 06): a diffusers pipeline folder
<-> one original single-file checkpoint. The tensors are renamed by minisd.loading's key maps; the
tokenizer, a model part, is written here, above both loading and models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from minisd.loading.configs import CONFIG_DIR, read_configs
from minisd.loading.files import atomic_folder, check_destination, write_text
from minisd.loading.single_file import (
    diffusers_to_original,
    load_checkpoint,
    original_to_diffusers,
    save_checkpoint,
    unet_config_for,
)
from minisd.loading.state_dict import find_weights, load_safetensors
from minisd.models.tokenizer import CLIPTokenizer


def folder_to_single_file(
    folder: str | os.PathLike,
    path: str | os.PathLike,
    variant: str | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> None:
    """Pack a diffusers folder (unet/, vae/, text_encoder/) into one original-layout checkpoint.

    An existing `path` is replaced only with `overwrite`; the file appears only once complete."""
    folder = Path(folder)
    check_destination(path, overwrite)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder} has no model_index.json: is it a diffusers pipeline folder?")
    configs = read_configs(folder)
    components = {
        n: load_safetensors(find_weights(folder / n, variant)) for n in ("unet", "vae", "text_encoder")
    }
    state = diffusers_to_original(components, configs["unet"], configs["vae"])
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    save_checkpoint(state, path)


def single_file_to_folder(
    path: str | os.PathLike,
    folder: str | os.PathLike,
    config: str | os.PathLike | None = None,
    use_ema: bool | None = None,
    overwrite: bool = False,
) -> None:
    """Unpack an original SD v1.x checkpoint into a diffusers folder, configs from `config` (None: v1.5).

    The tokenizer comes from `config`'s tokenizer/ when it has the vocabulary, else OpenAI's BPE file.
    The folder is written beside its destination and moved there once complete: an existing model
    folder is replaced whole, and only with `overwrite`; a folder holding anything else never is.
    """
    path, folder = Path(path), Path(folder)
    check_destination(folder, overwrite, is_folder=True)
    src = Path(config) if config is not None else CONFIG_DIR
    configs, state = read_configs(src), load_checkpoint(path)
    configs["unet"] = unet_config_for(state, configs["unet"])  # an inpainting file reads 9 channels
    parts = original_to_diffusers(state, configs["unet"], configs["vae"], use_ema, name=str(path))
    tokenizer = CLIPTokenizer.from_pretrained(
        src / "tokenizer" if (src / "tokenizer" / "vocab.json").is_file() else None
    )
    with atomic_folder(folder, overwrite) as tmp:
        index = (CONFIG_DIR / "model_index.json").read_text()  # the components written here
        write_text(tmp / "model_index.json", index)
        for name, weights in (
            ("unet", "diffusion_pytorch_model"),
            ("vae", "diffusion_pytorch_model"),
            ("text_encoder", "model"),
        ):
            (tmp / name).mkdir()
            write_text(tmp / name / "config.json", json.dumps(configs[name], indent=2))
            save_checkpoint(parts[name], tmp / name / f"{weights}.safetensors")
        (tmp / "scheduler").mkdir()
        write_text(tmp / "scheduler" / "scheduler_config.json", json.dumps(configs["scheduler"], indent=2))
        tokenizer.save_pretrained(tmp / "tokenizer")
