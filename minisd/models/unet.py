"""The conditional UNet of Stable Diffusion (chapter 04): predicts the noise in a latent.

conv_in -> 4 down blocks (each halving H, W except the last) -> mid block -> 4 up blocks (each
consuming the skips of its level) -> GroupNorm, SiLU, conv_out. The timestep enters every resnet
through a shared embedding; the text enters every transformer through cross-attention.
Config keys are diffusers' (`unet/config.json`), so the official weights load with no renaming.
"""

from __future__ import annotations

import torch
from torch import nn

from minisd.models.embeddings import TimestepEmbedding, get_timestep_embedding
from minisd.models.modeling_utils import ModelMixin
from minisd.models.unet_blocks import (
    CrossAttnDownBlock2D,
    CrossAttnUpBlock2D,
    DownBlock2D,
    UNetMidBlock2DCrossAttn,
    UpBlock2D,
)

DOWN_BLOCKS = {"CrossAttnDownBlock2D": CrossAttnDownBlock2D, "DownBlock2D": DownBlock2D}
UP_BLOCKS = {"CrossAttnUpBlock2D": CrossAttnUpBlock2D, "UpBlock2D": UpBlock2D}


def _block(table: dict, name: str, kwargs: dict, attention: dict) -> nn.Module:
    if name not in table:
        raise ValueError(f"unsupported block type {name!r}: minisd's UNet builds {sorted(table)}")
    return table[name](**kwargs, **(attention if name.startswith("CrossAttn") else {}))


class UNet2DConditionModel(ModelMixin):
    """eps_theta(z_t, t, text): [B, 4, H/8, W/8] latents, timesteps, [B, 77, 768] text -> [B, 4, H/8, W/8].

    `attention_head_dim` follows diffusers' historical meaning: it is the NUMBER of heads per block
    (8 everywhere in v1.x, so the head width is channels / 8; SD 2.x gives a list like [5, 10, 20, 20]
    for 64-wide heads). SD 2.x also sets `use_linear_projection` and `cross_attention_dim=1024`.
    """

    def __init__(
        self,
        sample_size: int = 64,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        attention_head_dim: int | tuple[int, ...] = 8,
        use_linear_projection: bool = False,
    ):
        super().__init__()
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
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise. sample: [B, C, H, W]; timestep: a number, 0-d or [B]; text: [B, L, D].

        `encoder_attention_mask` [B, L] (1/True: read the token, 0/False: hide it, e.g. padding)
        limits the cross-attention; None reads all L tokens, as SD v1.x does.
        """
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
        for block in self.up_blocks:
            k = len(block.resnets)
            x = block(x, skips[-k:], temb, encoder_hidden_states, mask)
            skips = skips[:-k]
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))  # [B, out_channels, H, W]
