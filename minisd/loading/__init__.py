"""Getting weights in and out: safetensors and strict key checks, the shipped configs, the original
single-file layout and its key maps, and the files minisd fetches (chapter 06)."""

from minisd.loading.configs import CONFIG_DIR, read_configs, sd15_config
from minisd.loading.key_maps import (
    text_encoder_keys,
    unet_blocks,
    unet_from_original,
    unet_to_original,
    vae_blocks,
    vae_from_original,
    vae_to_original,
)
from minisd.loading.single_file import (
    FILE_SUFFIXES,
    TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    check_sd1,
    detect_architecture,
    diffusers_to_original,
    ema_key,
    load_checkpoint,
    original_to_diffusers,
    save_checkpoint,
    unet_config_for,
)
from minisd.loading.state_dict import CheckpointError, find_weights, load_into, load_safetensors, read_config

__all__ = [
    "CONFIG_DIR",
    "FILE_SUFFIXES",
    "TEXT_PREFIX",
    "UNET_PREFIX",
    "VAE_PREFIX",
    "CheckpointError",
    "check_sd1",
    "detect_architecture",
    "diffusers_to_original",
    "ema_key",
    "find_weights",
    "load_checkpoint",
    "load_into",
    "load_safetensors",
    "original_to_diffusers",
    "read_config",
    "read_configs",
    "save_checkpoint",
    "sd15_config",
    "text_encoder_keys",
    "unet_blocks",
    "unet_config_for",
    "unet_from_original",
    "unet_to_original",
    "vae_blocks",
    "vae_from_original",
    "vae_to_original",
]
