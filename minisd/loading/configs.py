"""The configs that ship inside the package: SD v1.5's, in the diffusers folder layout.

One source for code and tests alike: `sd15_config("unet")` reads `minisd/configs/sd15/unet/config.json`.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from pathlib import Path

from minisd.errors import UserError
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


def check_config_types(cls: type, config: dict) -> None:
    """Raise a UserError naming each config value whose type the constructor's annotation excludes
    (`layers_per_block: "1"`, `block_out_channels: 64`, `scaling_factor: "0.5"`)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except NameError:  # an annotation this module cannot resolve: nothing to check against
        return
    annotations = {n: p.annotation for n, p in inspect.signature(cls.__init__).parameters.items()}
    bad = [
        f"{k}={v!r:.40} (expected {annotations[k]})"
        for k, v in config.items()
        if k in hints and not _matches(v, hints[k])
    ]
    if bad:
        raise UserError(f"{cls.__name__} config: wrong type of {'; '.join(bad)}. Is the config.json damaged?")


def _matches(value: object, hint: object) -> bool:
    """Whether a JSON value fits a type annotation (lists stand for tuples); unknown kinds pass."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, int | float if hint is float else int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            return False
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return not args or all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True
