"""Where a pipeline's parts come from: a diffusers folder, one original checkpoint file, or a hub id
(chapter 06). The cheap parts (scheduler, tokenizer) are built first, so a bad one fails before
gigabytes of weights are read."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from minisd.device import get_device
from minisd.errors import UserError
from minisd.loading.assets import hub_download
from minisd.loading.configs import CONFIG_DIR, read_configs
from minisd.loading.single_file import load_checkpoint, original_to_diffusers, unet_config_for
from minisd.loading.state_dict import empty_weights, load_into, read_config, read_json
from minisd.models.clip import CLIPTextModel
from minisd.models.modeling_utils import _one_dtype
from minisd.models.tokenizer import CLIPTokenizer
from minisd.models.unet import UNet2DConditionModel
from minisd.models.vae import AutoencoderKL
from minisd.schedulers import SchedulerMixin, get_scheduler

MODELS = {"text_encoder": CLIPTextModel, "unet": UNet2DConditionModel, "vae": AutoencoderKL}


def _tokenizer(tokenizer: CLIPTokenizer | str | os.PathLike | None, folder: Path) -> CLIPTokenizer:
    """The given tokenizer, else the folder's tokenizer/ when it has a vocabulary, else OpenAI's BPE."""
    if isinstance(tokenizer, CLIPTokenizer):
        return tokenizer
    if tokenizer is None and (folder / "tokenizer" / "vocab.json").is_file():
        tokenizer = folder / "tokenizer"
    return CLIPTokenizer.from_pretrained(tokenizer)


def _scheduler(config: dict) -> SchedulerMixin:
    return get_scheduler(config.get("_class_name", "PNDMScheduler"), config)


def load_pipeline_parts(
    pretrained_model_name_or_path: str | os.PathLike,
    config: str | os.PathLike | None = None,
    tokenizer: CLIPTokenizer | str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    variant: str | None = None,
    use_ema: bool | None = None,
    torch_dtype: torch.dtype | None = None,
) -> dict:
    """The keyword arguments of `StableDiffusionPipeline(...)`: models, tokenizer, scheduler and the
    folder's settings (see `StableDiffusionPipeline.from_pretrained`)."""
    path = pretrained_model_name_or_path
    local = Path(path).exists() or Path(str(path).split("/")[0]).is_dir()  # "models/sd15" is a local path
    if not local and re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
        path = hub_download(str(path), variant)  # "owner/name": a model hub repository
    path = Path(path)
    device = torch.device(device) if device is not None else get_device()
    dtype = _one_dtype(dtype, torch_dtype) or torch.float32  # also for fp16 files: CPUs compute in fp32
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{path} has no model_index.json: pass a diffusers pipeline folder (unet/, vae/, "
                "text_encoder/, tokenizer/, scheduler/) or a .safetensors/.ckpt single file"
            )
        folder, scheduler_config = path, read_config(path / "scheduler")
        index = read_json(path / "model_index.json")
        if not isinstance(index, dict):
            raise UserError(f"{path / 'model_index.json'} holds a JSON {type(index).__name__}, not an object")
    elif path.is_file():
        folder = Path(config) if config is not None else CONFIG_DIR
        configs = read_configs(folder)
        scheduler_config, index = configs["scheduler"], {}
    else:
        raise FileNotFoundError(
            f"no model at {path}: expected a diffusers folder or a .safetensors/.ckpt file "
            "(SD v1.5: huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5)"
        )
    # the cheap parts first, so that a bad scheduler or tokenizer fails before gigabytes are read
    scheduler, tokenizer = _scheduler(scheduler_config), _tokenizer(tokenizer, folder)
    if path.is_dir():
        models = {
            n: c.from_pretrained(path / n, dtype=dtype, device=device, variant=variant)
            for n, c in MODELS.items()
        }
    else:
        state = load_checkpoint(path)
        configs["unet"] = unet_config_for(state, configs["unet"])  # an inpainting file reads 9 channels
        parts = original_to_diffusers(state, configs["unet"], configs["vae"], use_ema, name=str(path))
        del state
        models = {}
        for name, model_cls in MODELS.items():
            with empty_weights():
                model = model_cls.from_config(configs[name])
            state = model_cls.convert_state_dict(parts.pop(name))
            models[name] = load_into(model, state, dtype=dtype, device=device)
    return dict(
        tokenizer=tokenizer,
        scheduler=scheduler,
        scheduler_config=scheduler_config,
        mask_text_padding=bool(index.get("mask_text_padding", False)),
        **models,
    )
