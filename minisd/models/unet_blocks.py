"""The UNet's down, mid and up blocks (chapter 04).

A down block runs `layers_per_block` ResnetBlock2D and then halves the resolution; every
intermediate output is kept as a skip connection. An up block runs `layers_per_block + 1` resnets,
each first concatenating one skip (last in, first out) along the channels, and then doubles the
resolution. The cross-attention variants (CrossAttnDownBlock2D, CrossAttnUpBlock2D) are the same
blocks with a Transformer2DModel after every resnet: one implementation, whose `attentions` is
None in the plain blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from minisd.models.attention import Transformer2DModel
from minisd.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D


def transformer_layers(
    num_layers: int, channels: int, heads: int | None, cross_attention_dim: int, groups: int, linear: bool
) -> nn.ModuleList | None:
    """A block's `attentions`: `num_layers` Transformer2DModels of `heads` heads (None: a plain block)."""
    if heads is None:
        return None
    return nn.ModuleList(
        Transformer2DModel(
            heads,
            channels // heads,
            channels,
            cross_attention_dim,
            norm_num_groups=groups,
            use_linear_projection=linear,
        )
        for _ in range(num_layers)
    )


def block_layers(
    resnet_in_channels: list[int],
    out_channels: int,
    temb_channels: int,
    resnet_eps: float,
    resnet_groups: int,
    num_attention_heads: int | None,
    cross_attention_dim: int,
    use_linear_projection: bool,
) -> tuple[nn.ModuleList, nn.ModuleList | None]:
    """A down or up block's `resnets` (one per entry of `resnet_in_channels`) and their `attentions`."""
    resnets = nn.ModuleList(
        ResnetBlock2D(cin, out_channels, temb_channels, resnet_groups, resnet_eps)
        for cin in resnet_in_channels
    )
    attentions = transformer_layers(
        len(resnets),
        out_channels,
        num_attention_heads,
        cross_attention_dim,
        resnet_groups,
        use_linear_projection,
    )
    return resnets, attentions


class DownBlock2D(nn.Module):
    """Resnets (each followed by a transformer when `num_attention_heads` is set), then an optional
    stride-2 downsampler. Returns the output and the skips it produced."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int = 2,
        resnet_eps: float = 1e-5,
        resnet_groups: int = 32,
        add_downsample: bool = True,
        downsample_padding: int = 1,
        num_attention_heads: int | None = None,
        cross_attention_dim: int = 768,
        use_linear_projection: bool = False,
    ):
        super().__init__()
        self.resnets, self.attentions = block_layers(
            [in_channels] + [out_channels] * (num_layers - 1), out_channels, temb_channels, resnet_eps,
            resnet_groups, num_attention_heads, cross_attention_dim, use_linear_projection,
        )  # fmt: skip
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, padding=downsample_padding)])
            if add_downsample
            else None
        )

    def forward(
        self,
        x: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        skips = ()
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, encoder_hidden_states, encoder_attention_mask)
            skips += (x,)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips += (x,)
        return x, skips


class CrossAttnDownBlock2D(DownBlock2D):
    """DownBlock2D with a Transformer2DModel (self- and cross-attention) after every resnet."""

    def __init__(self, *args, num_attention_heads: int = 8, **kwargs):
        super().__init__(*args, num_attention_heads=num_attention_heads, **kwargs)


class UNetMidBlock2DCrossAttn(nn.Module):
    """The bottleneck: resnet -> transformer -> resnet at the lowest resolution (8x8 for a 64x64 latent)."""

    def __init__(
        self,
        in_channels: int,
        temb_channels: int,
        resnet_eps: float = 1e-5,
        resnet_groups: int = 32,
        output_scale_factor: float = 1.0,
        num_attention_heads: int = 8,
        cross_attention_dim: int = 768,
        use_linear_projection: bool = False,
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(
                in_channels, in_channels, temb_channels, resnet_groups, resnet_eps, 0.0, output_scale_factor
            )
            for _ in range(2)
        )
        self.attentions = transformer_layers(
            1, in_channels, num_attention_heads, cross_attention_dim, resnet_groups, use_linear_projection
        )

    def forward(
        self,
        x: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, encoder_hidden_states, encoder_attention_mask), temb)


class UpBlock2D(nn.Module):
    """Resnets on [x, skip] concatenated along channels (each followed by a transformer when
    `num_attention_heads` is set), then an optional nearest-neighbour upsampler.

    The i-th resnet takes `prev_output_channel` (i = 0) or `out_channels` channels from below plus
    the skip's channels: `in_channels` (the last resnet, whose skip comes from the previous level)
    or `out_channels`.
    """

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int = 3,
        resnet_eps: float = 1e-5,
        resnet_groups: int = 32,
        add_upsample: bool = True,
        num_attention_heads: int | None = None,
        cross_attention_dim: int = 768,
        use_linear_projection: bool = False,
    ):
        super().__init__()
        # from below: prev_output_channel, then out_channels; the skip: out_channels, the last in_channels
        below = [prev_output_channel] + [out_channels] * (num_layers - 1)
        skip = [out_channels] * (num_layers - 1) + [in_channels]
        self.resnets, self.attentions = block_layers(
            [b + s for b, s in zip(below, skip, strict=True)], out_channels, temb_channels, resnet_eps,
            resnet_groups, num_attention_heads, cross_attention_dim, use_linear_projection,
        )  # fmt: skip
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        for i, (resnet, skip) in enumerate(zip(self.resnets, reversed(skips), strict=True)):
            x = resnet(torch.cat([x, skip], dim=1), temb)  # [B, C_x + C_skip, H, W] -> [B, C_out, H, W]
            if self.attentions is not None:
                x = self.attentions[i](x, encoder_hidden_states, encoder_attention_mask)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class CrossAttnUpBlock2D(UpBlock2D):
    """UpBlock2D with a Transformer2DModel after every resnet."""

    def __init__(self, *args, num_attention_heads: int = 8, **kwargs):
        super().__init__(*args, num_attention_heads=num_attention_heads, **kwargs)
