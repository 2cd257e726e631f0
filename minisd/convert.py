"""Whole-model conversion for `python -m minisd convert` (chapter 06): a diffusers pipeline folder
<-> one original single-file checkpoint. The tensors are renamed by minisd.loading's key maps; the
tokenizer, a model part, is written here, above both loading and models.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from minisd.loading.configs import CONFIG_DIR, read_configs
from minisd.loading.single_file import (
    diffusers_to_original,
    load_checkpoint,
    original_to_diffusers,
    save_checkpoint,
)
from minisd.loading.state_dict import find_weights, load_safetensors
from minisd.models.tokenizer import CLIPTokenizer


def folder_to_single_file(
    folder: str | os.PathLike,
    path: str | os.PathLike,
    variant: str | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Pack a diffusers folder (unet/, vae/, text_encoder/) into one original-layout checkpoint."""
    folder = Path(folder)
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
) -> None:
    """Unpack an original SD v1.x checkpoint into a diffusers folder, configs from `config` (None: v1.5).

    The tokenizer comes from `config`'s tokenizer/ when it has the vocabulary, else OpenAI's BPE file.
    """
    path, folder = Path(path), Path(folder)
    src = Path(config) if config is not None else CONFIG_DIR
    configs = read_configs(src)
    parts = original_to_diffusers(
        load_checkpoint(path), configs["unet"], configs["vae"], use_ema, name=str(path)
    )
    tokenizer = CLIPTokenizer.from_pretrained(
        src / "tokenizer" if (src / "tokenizer" / "vocab.json").is_file() else None
    )
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIG_DIR / "model_index.json", folder / "model_index.json")  # the components written here
    for name, weights in (
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ):
        (folder / name).mkdir(exist_ok=True)
        (folder / name / "config.json").write_text(json.dumps(configs[name], indent=2))
        save_checkpoint(parts[name], folder / name / f"{weights}.safetensors")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(configs["scheduler"], indent=2))
    tokenizer.save_pretrained(folder / "tokenizer")
