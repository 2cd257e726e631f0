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

import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from minisd.modeling import CheckpointError, find_weights, load_safetensors, read_config

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
EMA_PREFIX = "model_ema."
EMA_MIN_KEYS = 100  # diffusers' threshold for "this checkpoint carries EMA weights"
CONFIG_DIR = Path(__file__).parent / "configs" / "sd15"  # SD v1.5's configs in the diffusers layout
FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")

# diffusers name -> original name of the parts inside a block
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
VAE_ATTENTION_LINEAR = re.compile(r"mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$")
ORIGINAL_ATTENTION_CONV = re.compile(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$")

Block = tuple[str, str, dict[str, str]]  # (diffusers prefix, original prefix, renames inside)


def unet_blocks(config: dict) -> list[Block]:
    """Every UNet module as (diffusers prefix, original prefix, part renames), from its config."""
    per = int(config["layers_per_block"])
    n = len(config["block_out_channels"])
    blocks: list[Block] = [
        ("conv_in", "input_blocks.0.0", {}),
        ("time_embedding.linear_1", "time_embed.0", {}),
        ("time_embedding.linear_2", "time_embed.2", {}),
        ("mid_block.resnets.0", "middle_block.0", UNET_RESNET),
        ("mid_block.attentions.0", "middle_block.1", {}),
        ("mid_block.resnets.1", "middle_block.2", UNET_RESNET),
        ("conv_norm_out", "out.0", {}),
        ("conv_out", "out.2", {}),
    ]
    # input_blocks: 0 is conv_in, then per down block `per` (resnet, attention) pairs and a downsampler
    for i, kind in enumerate(config["down_block_types"]):
        for j in range(per):
            k = 1 + i * (per + 1) + j
            blocks.append((f"down_blocks.{i}.resnets.{j}", f"input_blocks.{k}.0", UNET_RESNET))
            if kind.startswith("CrossAttn"):
                blocks.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{k}.1", {}))
        if i < n - 1:
            blocks.append(
                (f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{(i + 1) * (per + 1)}.0.op", {})
            )
    # output_blocks: per up block `per + 1` (resnet, attention) pairs; the last one also upsamples
    for i, kind in enumerate(config["up_block_types"]):
        attention = kind.startswith("CrossAttn")
        for j in range(per + 1):
            k = i * (per + 1) + j
            blocks.append((f"up_blocks.{i}.resnets.{j}", f"output_blocks.{k}.0", UNET_RESNET))
            if attention:
                blocks.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{k}.1", {}))
        if i < n - 1:
            k = i * (per + 1) + per
            blocks.append(
                (f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{k}.{2 if attention else 1}.conv", {})
            )
    return blocks


def vae_blocks(config: dict) -> list[Block]:
    """Every VAE module as (diffusers prefix, original prefix, part renames), from its config."""
    per = int(config["layers_per_block"])
    n = len(config["block_out_channels"])
    blocks: list[Block] = [("quant_conv", "quant_conv", {}), ("post_quant_conv", "post_quant_conv", {})]
    for part in ("encoder", "decoder"):
        blocks += [
            (f"{part}.conv_in", f"{part}.conv_in", {}),
            (f"{part}.conv_out", f"{part}.conv_out", {}),
            (f"{part}.conv_norm_out", f"{part}.norm_out", {}),
            (f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", VAE_RESNET),
            (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", VAE_ATTENTION),
            (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", VAE_RESNET),
        ]
    for i in range(n):
        blocks += [
            (f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", VAE_RESNET)
            for j in range(per)
        ]
        if i < n - 1:
            blocks.append(
                (f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv", {})
            )
    for i in range(n):  # the decoder's up blocks are numbered from the bottom in the original
        o = n - 1 - i
        blocks += [
            (f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{o}.block.{j}", VAE_RESNET)
            for j in range(per + 1)
        ]
        if i < n - 1:
            blocks.append((f"decoder.up_blocks.{i}.upsamplers.0.conv", f"decoder.up.{o}.upsample.conv", {}))
    return blocks


def _rename(key: str, table: dict[str, tuple[str, dict[str, str]]]) -> str | None:
    """Map one key through a {prefix: (new prefix, part renames)} table; None if no prefix fits."""
    parts = key.split(".")
    for m in range(len(parts) - 1, 0, -1):  # longest prefix first
        prefix = ".".join(parts[:m])
        if prefix in table:
            new_prefix, renames = table[prefix]
            rest = ".".join(parts[m:])
            for old, new in renames.items():
                if rest == old or rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
                    break
            return f"{new_prefix}.{rest}"
    return None


def _convert(state_dict: dict[str, torch.Tensor], blocks: list[Block], to_original: bool, what: str) -> dict:
    if to_original:
        table = {d: (o, r) for d, o, r in blocks}
    else:
        table = {o: (d, {v: k for k, v in r.items()}) for d, o, r in blocks}
    out, unknown = {}, []
    for key, value in state_dict.items():
        new = _rename(key, table)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} {what} keys fit no block of the config: {', '.join(unknown[:8])}. "
            "Is the config (layers_per_block, block types) the one of this checkpoint?"
        )
    return out


def unet_to_original(state_dict: dict, config: dict) -> dict:
    """diffusers UNet keys -> `input_blocks` / `middle_block` / `output_blocks` keys (no prefix)."""
    return _convert(state_dict, unet_blocks(config), True, "UNet")


def unet_from_original(state_dict: dict, config: dict) -> dict:
    """Original UNet keys (prefix removed) -> diffusers keys."""
    return _convert(state_dict, unet_blocks(config), False, "UNet")


def vae_to_original(state_dict: dict, config: dict) -> dict:
    """diffusers VAE keys -> original keys; attention Linear [C, C] -> 1x1 conv [C, C, 1, 1]."""
    out = _convert(state_dict, vae_blocks(config), True, "VAE")
    for key, value in out.items():
        if ORIGINAL_ATTENTION_CONV.search(key) and value.ndim == 2:
            out[key] = value[:, :, None, None]
    return out


def vae_from_original(state_dict: dict, config: dict) -> dict:
    """Original VAE keys (prefix removed) -> diffusers keys; 1x1 conv attention weights -> Linear."""
    out = _convert(state_dict, vae_blocks(config), False, "VAE")
    for key, value in out.items():
        if VAE_ATTENTION_LINEAR.search(key) and value.ndim == 4:
            out[key] = value[:, :, 0, 0]
    return out


def text_encoder_keys(state_dict: dict) -> dict:
    """CLIP text keys in the official `text_model.*` spelling (transformers 5 drops the prefix);
    the `position_ids` buffer (0..76, not a weight) is dropped."""
    return {
        (k if k.startswith("text_model.") else f"text_model.{k}"): v
        for k, v in state_dict.items()
        if not k.endswith("position_ids")
    }


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
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(
                f"{path} holds pickled Python objects besides tensors, and minisd never runs pickled code "
                f"(torch.load(weights_only=True) refused: {str(e).splitlines()[0]}). "
                "Use a .safetensors version of the model."
            ) from e
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
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
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def save_checkpoint(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write a state dict as `.safetensors`, or as `.ckpt` wrapped in {"state_dict": ...} like ldm."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    if path.suffix == ".safetensors":
        save_file(tensors, str(path))
    elif path.suffix in FILE_SUFFIXES:
        torch.save({"state_dict": tensors}, path)
    else:
        raise ValueError(f"{path}: write .safetensors (recommended) or .ckpt")


def read_configs(folder: str | os.PathLike | None = None) -> dict[str, dict]:
    """The unet/vae/text_encoder/scheduler configs of a diffusers-layout folder (None: SD v1.5)."""
    folder = Path(folder) if folder is not None else CONFIG_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"config folder {folder} does not exist (expected a diffusers-layout folder)")
    return {name: read_config(folder / name) for name in ("unet", "vae", "text_encoder", "scheduler")}


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
    from minisd.tokenizer import CLIPTokenizer

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
