"""The conditional UNet of Stable Diffusion (chapter 04): predicts the noise in a latent.

conv_in -> 4 down blocks (each halving H, W except the last) -> mid block -> 4 up blocks (each
consuming the skips of its level) -> GroupNorm, SiLU, conv_out. The timestep enters every resnet
through a shared embedding; the text enters every transformer through cross-attention.
Config keys are diffusers' (`unet/config.json`), so the official weights load with no renaming;
as in diffusers, `unet(sample, t, text)` returns `UNet2DConditionOutput` (`.sample`, or `[0]`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from minisd.models.embeddings import TimestepEmbedding, get_timestep_embedding
from minisd.models.modeling_utils import ModelMixin, reject_unsupported
from minisd.models.unet_blocks import (
    CrossAttnDownBlock2D,
    CrossAttnUpBlock2D,
    DownBlock2D,
    UNetMidBlock2DCrossAttn,
    UpBlock2D,
)

DOWN_BLOCKS = {"CrossAttnDownBlock2D": CrossAttnDownBlock2D, "DownBlock2D": DownBlock2D}
UP_BLOCKS = {"CrossAttnUpBlock2D": CrossAttnUpBlock2D, "UpBlock2D": UpBlock2D}


class UNet2DConditionOutput(NamedTuple):
    """What the UNet returns: its prediction [B, out_channels, H, W] (the noise, for SD v1.x)."""

    sample: torch.Tensor


def _block(table: dict, name: str, kwargs: dict, attention: dict) -> nn.Module:
    if name not in table:
        raise ValueError(f"unsupported block type {name!r}: minisd's UNet builds {sorted(table)}")
    return table[name](**kwargs, **(attention if name.startswith("CrossAttn") else {}))


class UNet2DConditionModel(ModelMixin):
    """eps_theta(z_t, t, text): [B, 4, H/8, W/8] latents, timesteps, [B, 77, 768] text -> [B, 4, H/8, W/8].

    `attention_head_dim` follows diffusers' historical meaning: it is the NUMBER of heads per block
    (8 everywhere in v1.x, so the head width is channels / 8; SD 2.x gives a list like [5, 10, 20, 20]
    for 64-wide heads). SD 2.x also sets `use_linear_projection` and `cross_attention_dim=1024`.

    The constructor takes every key of diffusers' class with its default (so `cross_attention_dim`
    defaults to 1280 there and here; v1.5's config.json says 768); the options that SD v1.x/2.x do
    not use are refused, by name, at any value but their default.
    """

    def __init__(
        self,
        sample_size: int | tuple[int, int] | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        mid_block_type: str | None = "UNetMidBlock2DCrossAttn",
        up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        only_cross_attention: bool | tuple[bool, ...] = False,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int | tuple[int, ...] = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        dropout: float = 0.0,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int | tuple[int, ...] = 1280,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        reverse_transformer_layers_per_block: tuple[tuple[int, ...], ...] | None = None,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        attention_head_dim: int | tuple[int, ...] = 8,
        num_attention_heads: int | tuple[int, ...] | None = None,
        dual_cross_attention: bool = False,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        resnet_skip_time_act: bool = False,
        resnet_out_scale_factor: float = 1.0,
        time_embedding_type: str = "positional",
        time_embedding_dim: int | None = None,
        time_embedding_act_fn: str | None = None,
        timestep_post_act: str | None = None,
        time_cond_proj_dim: int | None = None,
        conv_in_kernel: int = 3,
        conv_out_kernel: int = 3,
        projection_class_embeddings_input_dim: int | None = None,
        attention_type: str = "default",
        class_embeddings_concat: bool = False,
        mid_block_only_cross_attention: bool | None = None,
        cross_attention_norm: str | None = None,
        addition_embed_type_num_heads: int = 64,
    ):
        super().__init__()
        reject_unsupported(
            "UNet2DConditionModel",
            dict(
                mid_block_type=(mid_block_type, "UNetMidBlock2DCrossAttn"),
                only_cross_attention=(only_cross_attention, False),
                dropout=(dropout, 0.0),
                transformer_layers_per_block=(transformer_layers_per_block, 1),
                reverse_transformer_layers_per_block=(reverse_transformer_layers_per_block, None),
                encoder_hid_dim=(encoder_hid_dim, None),
                encoder_hid_dim_type=(encoder_hid_dim_type, None),
                num_attention_heads=(num_attention_heads, None),  # diffusers refuses it too
                dual_cross_attention=(dual_cross_attention, False),
                class_embed_type=(class_embed_type, None),
                addition_embed_type=(addition_embed_type, None),
                addition_time_embed_dim=(addition_time_embed_dim, None),
                num_class_embeds=(num_class_embeds, None),
                upcast_attention=(upcast_attention, False),
                resnet_time_scale_shift=(resnet_time_scale_shift, "default"),
                resnet_skip_time_act=(resnet_skip_time_act, False),
                resnet_out_scale_factor=(resnet_out_scale_factor, 1.0),
                time_embedding_type=(time_embedding_type, "positional"),
                time_embedding_dim=(time_embedding_dim, None),
                time_embedding_act_fn=(time_embedding_act_fn, None),
                timestep_post_act=(timestep_post_act, None),
                time_cond_proj_dim=(time_cond_proj_dim, None),
                conv_in_kernel=(conv_in_kernel, 3),
                conv_out_kernel=(conv_out_kernel, 3),
                projection_class_embeddings_input_dim=(projection_class_embeddings_input_dim, None),
                attention_type=(attention_type, "default"),
                class_embeddings_concat=(class_embeddings_concat, False),
                mid_block_only_cross_attention=(mid_block_only_cross_attention, None),
                cross_attention_norm=(cross_attention_norm, None),
                addition_embed_type_num_heads=(addition_embed_type_num_heads, 64),
            ),
        )
        for name, value in [
            ("cross_attention_dim", cross_attention_dim),
            ("layers_per_block", layers_per_block),
        ]:
            if not isinstance(value, int):
                raise NotImplementedError(
                    f"UNet2DConditionModel: minisd takes one {name} for all blocks, got {value}"
                )
        if norm_num_groups is None:
            raise NotImplementedError(
                "UNet2DConditionModel: norm_num_groups=None (no GroupNorm) is not implemented"
            )
        if act_fn != "silu":
            raise ValueError(f"act_fn={act_fn!r}: minisd's UNet implements 'silu' only (SD 1.x/2.x)")
        n = len(block_out_channels)
        if not (len(down_block_types) == len(up_block_types) == n):
            raise ValueError(
                f"down_block_types ({len(down_block_types)}), up_block_types ({len(up_block_types)}) and "
                f"block_out_channels ({n}) must have the same length"
            )
        heads = [attention_head_dim] * n if isinstance(attention_head_dim, int) else list(attention_head_dim)
        if len(heads) != n:
            raise ValueError(f"attention_head_dim {attention_head_dim} needs one entry per block ({n})")
        self.in_channels = in_channels
        self.cross_attention_dim = cross_attention_dim
        self.center_input_sample = center_input_sample
        self.flip_sin_to_cos, self.freq_shift = flip_sin_to_cos, freq_shift
        time_embed_dim = block_out_channels[0] * 4
        common = dict(temb_channels=time_embed_dim, resnet_eps=norm_eps, resnet_groups=norm_num_groups)

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)

        self.down_blocks = nn.ModuleList()
        out_ch = block_out_channels[0]
        for i, name in enumerate(down_block_types):
            in_ch, out_ch = out_ch, block_out_channels[i]
            kwargs = dict(
                in_channels=in_ch,
                out_channels=out_ch,
                num_layers=layers_per_block,
                add_downsample=i < n - 1,
                downsample_padding=downsample_padding,
                **common,
            )
            attention = dict(
                num_attention_heads=heads[i],
                cross_attention_dim=cross_attention_dim,
                use_linear_projection=use_linear_projection,
            )
            self.down_blocks.append(_block(DOWN_BLOCKS, name, kwargs, attention))

        self.mid_block = UNetMidBlock2DCrossAttn(
            block_out_channels[-1],
            output_scale_factor=mid_block_scale_factor,
            num_attention_heads=heads[-1],
            cross_attention_dim=cross_attention_dim,
            use_linear_projection=use_linear_projection,
            **common,
        )

        self.up_blocks = nn.ModuleList()
        rev_channels, rev_heads = list(reversed(block_out_channels)), list(reversed(heads))
        out_ch = rev_channels[0]
        for i, name in enumerate(up_block_types):
            prev_ch, out_ch = out_ch, rev_channels[i]
            kwargs = dict(
                in_channels=rev_channels[min(i + 1, n - 1)],  # the channels of this level's first skip
                prev_output_channel=prev_ch,
                out_channels=out_ch,
                num_layers=layers_per_block + 1,
                add_upsample=i < n - 1,
                **common,
            )
            attention = dict(
                num_attention_heads=rev_heads[i],
                cross_attention_dim=cross_attention_dim,
                use_linear_projection=use_linear_projection,
            )
            self.up_blocks.append(_block(UP_BLOCKS, name, kwargs, attention))

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def time_proj(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features of the timesteps: [B] -> [B, block_out_channels[0]]."""
        dim = self.conv_in.out_channels
        return get_timestep_embedding(timesteps, dim, self.flip_sin_to_cos, self.freq_shift)

    def _check_inputs(self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        if sample.ndim != 4 or sample.shape[1] != self.in_channels:
            raise ValueError(
                f"sample has shape {tuple(sample.shape)}; expected latents [B, {self.in_channels}, H, W] "
                "(encode images with the VAE first: 512x512 pixels -> [B, 4, 64, 64])"
            )
        factor = 2 ** sum(block.downsamplers is not None for block in self.down_blocks)
        if sample.shape[2] % factor or sample.shape[3] % factor:
            raise ValueError(
                f"latent size {tuple(sample.shape[2:])} is not divisible by {factor} (the UNet halves it "
                f"{factor.bit_length() - 1} times); use image sizes that are multiples of {8 * factor} pixels"
            )
        ehs = encoder_hidden_states
        if ehs.ndim != 3 or ehs.shape[2] != self.cross_attention_dim or ehs.shape[0] != sample.shape[0]:
            raise ValueError(
                f"encoder_hidden_states has shape {tuple(ehs.shape)}; expected [B, L, cross_attention_dim] = "
                f"[{sample.shape[0]}, L, {self.cross_attention_dim}] (the text encoder's last hidden state, "
                "one row per latent)"
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        down_intrablock_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[torch.Tensor]:
        """Predict the noise. sample: [B, C, H, W]; timestep: a number, 0-d or [B]; text: [B, L, D].

        Returns `UNet2DConditionOutput(sample)` (a plain 1-tuple with `return_dict=False`).
        `encoder_attention_mask` [B, L] (1/True: read the token, 0/False: hide it, e.g. padding)
        limits the cross-attention; None reads all L tokens, as SD v1.x does.
        `down_block_additional_residuals` (one per skip) and `mid_block_additional_residual`, a
        ControlNet's outputs, are added to the skips and to the middle block's output. diffusers'
        other arguments (class labels, adapter residuals, ...) are refused when given.
        """
        reject_unsupported(
            "UNet2DConditionModel.forward",
            dict(
                class_labels=(class_labels, None),
                timestep_cond=(timestep_cond, None),
                attention_mask=(attention_mask, None),
                cross_attention_kwargs=(cross_attention_kwargs, None),
                added_cond_kwargs=(added_cond_kwargs, None),
                down_intrablock_additional_residuals=(down_intrablock_additional_residuals, None),
            ),
        )
        self._check_inputs(sample, encoder_hidden_states)
        mask = encoder_attention_mask
        if mask is not None:
            if mask.shape != encoder_hidden_states.shape[:2]:
                raise ValueError(
                    f"encoder_attention_mask has shape {tuple(mask.shape)}; expected [B, L] = "
                    f"{list(encoder_hidden_states.shape[:2])}, one flag per text token"
                )
            mask = mask.bool()[:, None, None, :]  # [B, 1, 1, L]: the same for every head and position
        b = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim > 1 or t.numel() not in (1, b):
            raise ValueError(f"timestep has shape {tuple(t.shape)}; expected a number, a 0-d tensor or [{b}]")
        t = t.reshape(-1).expand(b)  # [B]
        temb = self.time_embedding(self.time_proj(t).to(sample.dtype))  # [B, 4 * C0]

        if self.center_input_sample:
            sample = 2 * sample - 1.0
        x = self.conv_in(sample)  # [B, C0, H, W]
        skips = (x,)
        for block in self.down_blocks:
            x, block_skips = block(x, temb, encoder_hidden_states, mask)
            skips += block_skips
        x = self.mid_block(x, temb, encoder_hidden_states, mask)
        if (down_block_additional_residuals is None) != (mid_block_additional_residual is None):
            raise ValueError(
                "give down_block_additional_residuals and mid_block_additional_residual together "
                "(a ControlNet's two outputs)"
            )
        if down_block_additional_residuals is not None:
            if len(down_block_additional_residuals) != len(skips):
                raise ValueError(
                    f"{len(down_block_additional_residuals)} down_block_additional_residuals for "
                    f"{len(skips)} skip connections: give one per skip (a ControlNet of this UNet's config)"
                )
            skips = tuple(s + r for s, r in zip(skips, down_block_additional_residuals, strict=True))
            x = x + mid_block_additional_residual
        for block in self.up_blocks:
            k = len(block.resnets)
            x = block(x, skips[-k:], temb, encoder_hidden_states, mask)
            skips = skips[:-k]
        out = self.conv_out(self.conv_act(self.conv_norm_out(x)))  # [B, out_channels, H, W]
        return UNet2DConditionOutput(out) if return_dict else (out,)
