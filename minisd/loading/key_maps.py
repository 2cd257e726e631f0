"""Key maps between the original single-file layout and diffusers' names (chapter 06).

Built from each component's config (block counts, layers per block), not written out as a table:
`unet_blocks` and `vae_blocks` list (diffusers prefix, original prefix, renames inside) per block.
"""

from __future__ import annotations

import re

import torch

from minisd.loading.state_dict import CheckpointError

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
