"""The original ControlNet 1.0 / 1.1 single files <-> diffusers' ControlNet names.

lllyasviel's files (`control_sd15_canny.pth`, `control_v11p_sd15_canny.pth`) keep the copy of the
UNet encoder under `control_model.*` with the UNet's original names (`input_blocks`, `middle_block`,
`time_embed`), plus the ControlNet's own parts:
- `input_hint_block.{0,2,...,14}`: the condition embedding, convolutions with a SiLU between each
  (odd indices hold no weights): conv_in, then `blocks.0..5`, then conv_out;
- `zero_convs.N.0`: the zero 1x1 convolution of skip N (diffusers' `controlnet_down_blocks.N`);
- `middle_block_out.0`: the middle block's (`controlnet_mid_block`).
ControlNet 1.0 files also carry the whole SD model they were trained with (`model.diffusion_model.*`,
...); only `control_model.*` is read. The map is built from the config, reusing the UNet's.
"""

from __future__ import annotations

import torch

from minisd.loading.key_maps import Block, _convert, unet_blocks
from minisd.loading.state_dict import CheckpointError

CONTROL_PREFIX = "control_model."
ENCODER = ("conv_in", "time_embedding.", "down_blocks.", "mid_block.")


def controlnet_blocks(config: dict) -> list[Block]:
    """Every ControlNet module as (diffusers prefix, original prefix, part renames), from its config."""
    blocks = [b for b in unet_blocks(config) if b[0].startswith(ENCODER)]
    per, n = int(config["layers_per_block"]), len(config["block_out_channels"])
    skips = 1 + n * per + (n - 1)  # conv_in, the resnets, the downsamplers
    blocks += [(f"controlnet_down_blocks.{i}", f"zero_convs.{i}.0", {}) for i in range(skips)]
    blocks.append(("controlnet_mid_block", "middle_block_out.0", {}))
    convs = 2 * (len(config.get("conditioning_embedding_out_channels") or (16, 32, 96, 256)) - 1)
    blocks.append(("controlnet_cond_embedding.conv_in", "input_hint_block.0", {}))
    blocks += [
        (f"controlnet_cond_embedding.blocks.{j}", f"input_hint_block.{2 * (j + 1)}", {}) for j in range(convs)
    ]
    blocks.append(("controlnet_cond_embedding.conv_out", f"input_hint_block.{2 * (convs + 1)}", {}))
    return blocks


def controlnet_to_original(state_dict: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """diffusers ControlNet keys -> the original file's keys, with the `control_model.` prefix."""
    out = _convert(state_dict, controlnet_blocks(config), True, "ControlNet")
    return {CONTROL_PREFIX + k: v for k, v in out.items()}


def controlnet_from_original(
    state_dict: dict[str, torch.Tensor], config: dict, name: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """An original ControlNet file's state dict -> diffusers keys, after checking it is one for SD v1.x."""
    control = {
        k.removeprefix(CONTROL_PREFIX): v for k, v in state_dict.items() if k.startswith(CONTROL_PREFIX)
    }
    if not control and "time_embed.0.weight" in state_dict:  # a file saved without the prefix
        control = dict(state_dict)
    if not control:
        diffusers = any(k.startswith("controlnet_cond_embedding.") for k in state_dict)
        raise CheckpointError(
            f"{name} holds no ControlNet weights (control_model.*)"
            + (
                "; it is in diffusers names: load its folder with ControlNetModel.from_pretrained"
                if diffusers
                else ""
            )
        )
    check_controlnet_sd1(control, config, name)
    return _convert(control, controlnet_blocks(config), False, "ControlNet")


def check_controlnet_sd1(control: dict[str, torch.Tensor], config: dict, name: str) -> None:
    """Raise a CheckpointError naming what the file is when it is not a ControlNet for this config."""
    if any(k.startswith("label_emb.") for k in control):
        raise CheckpointError(
            f"{name} is a ControlNet for SDXL (keys label_emb.*: pooled-text and size conditioning); "
            "minisd implements ControlNets for Stable Diffusion v1.x only"
        )
    width = config["cross_attention_dim"]
    for key, value in control.items():
        if key.endswith("attn2.to_k.weight") and value.shape[-1] != width:
            base = {1024: "SD 2.x", 2048: "SDXL"}.get(value.shape[-1], "another model")
            raise CheckpointError(
                f"{name} is a ControlNet for {base}: its cross-attention reads {value.shape[-1]}-wide text "
                f"({key}), this base model's {width}-wide (SD v1.x: 768)"
            )
