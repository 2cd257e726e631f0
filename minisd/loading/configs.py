"""The configs that ship inside the package: SD v1.5's, in the diffusers folder layout.

One source for code and tests alike: `sd15_config("unet")` reads `minisd/configs/sd15/unet/config.json`.
"""

from __future__ import annotations

import os
from pathlib import Path

from minisd.loading.state_dict import read_config

CONFIG_DIR = Path(__file__).parent.parent / "configs" / "sd15"  # SD v1.5's configs in the diffusers layout


def read_configs(folder: str | os.PathLike | None = None) -> dict[str, dict]:
    """The unet/vae/text_encoder/scheduler configs of a diffusers-layout folder (None: SD v1.5)."""
    folder = Path(folder) if folder is not None else CONFIG_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"config folder {folder} does not exist (expected a diffusers-layout folder)")
    return {name: read_config(folder / name) for name in ("unet", "vae", "text_encoder", "scheduler")}


def sd15_config(component: str) -> dict:
    """SD v1.5's official config of a component: "unet", "vae", "text_encoder", "scheduler", "tokenizer"."""
    if component == "tokenizer":
        import json

        return json.loads((CONFIG_DIR / "tokenizer" / "tokenizer_config.json").read_text())
    return read_config(CONFIG_DIR / component)
