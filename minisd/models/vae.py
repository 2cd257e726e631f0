"""The KL autoencoder (VAE) of Stable Diffusion, built in chapter 05.

The encoder turns an image [B, 3, H, W] in [-1, 1] into a diagonal Gaussian over latents
[B, 4, H/8, W/8]; the decoder maps a latent back to an image. Diffusion runs on the latents, scaled
by `scaling_factor` (0.18215 for v1.x) so that they have roughly unit variance. Large images can be
encoded / decoded in overlapping tiles whose seams are blended (`enable_tiling`), batches one image
at a time (`enable_slicing`), and an fp16 decode that overflows is redone in fp32.

As in diffusers, `encode` returns `AutoencoderKLOutput(latent_dist)` and `decode` returns
`DecoderOutput(sample)`: named tuples, read by attribute or by index.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from minisd.models.attention import Attention
from minisd.models.modeling_utils import ModelMixin, reject_unsupported
from minisd.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from minisd.models.vae_tiling import tiled_apply

EPS = 1e-6  # the VAE's GroupNorm eps everywhere (1e-5 would be a silent drift)


class DiagonalGaussianDistribution:
    """The encoder's posterior q(z | x): a Gaussian with a diagonal covariance.

    `parameters` [B, 2C, h, w] holds the mean and the log-variance stacked on the channels.
    """

    def __init__(self, parameters: torch.Tensor):
        self.parameters = parameters
        self.mean, logvar = parameters.chunk(2, dim=1)  # [B, C, h, w] each
        self.logvar = logvar.clamp(-30.0, 20.0)  # keeps exp() finite
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mean + std * eps, eps ~ N(0, I) drawn on the generator's device (diffusers' way)."""
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        """The most likely latent: the mean."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per example, summed over channels and positions: [B]."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class AutoencoderKLOutput(NamedTuple):
    """What `encode` returns: the posterior over the latents."""

    latent_dist: DiagonalGaussianDistribution


class DecoderOutput(NamedTuple):
    """What `decode` (and `forward`) return: the image [B, 3, H, W], about [-1, 1]."""

    sample: torch.Tensor


class DownEncoderBlock2D(nn.Module):
    """`num_layers` ResNet blocks, then (except in the last block) a stride-2 downsample."""

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_downsample: bool
    ):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, None, groups, EPS)
            for i in range(num_layers)
        )
        # padding=0: the VAE pads right/bottom by one pixel before its 3x3 stride-2 conv
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding=0)]) if add_downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock2D(nn.Module):
    """`num_layers` ResNet blocks, then (except in the last block) a nearest-x2 upsample + conv."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, None, groups, EPS)
            for i in range(num_layers)
        )
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class SpatialSelfAttention(Attention):
    """Single-head self-attention over the h*w positions of a feature map, with a residual.

    GroupNorm, then the feature map [B, C, h, w] read as h*w tokens [B, hw, C], attention, and the
    tokens folded back into a map and added to the input.
    """

    def __init__(self, channels: int, groups: int):
        super().__init__(channels, heads=1, dim_head=channels, bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).view(b, c, h * w).transpose(1, 2)  # [B, hw, C]
        out = super().forward(tokens)  # [B, hw, C]
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNetMidBlock2D(nn.Module):
    """ResNet -> single-head spatial self-attention over all h*w positions -> ResNet."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups)])
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, None, groups, EPS) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        x = self.attentions[0](x)  # [B, C, h, w]
        return self.resnets[1](x)


class Encoder(nn.Module):
    """Image [B, 3, H, W] -> mean and log-variance [B, 2 * latent_channels, H/f, W/f]."""

    def __init__(
        self, in_channels: int, latent_channels: int, block_out_channels: list[int], layers: int, groups: int
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        last = len(block_out_channels) - 1
        channels_in = [block_out_channels[0], *block_out_channels[:-1]]
        self.down_blocks = nn.ModuleList(
            DownEncoderBlock2D(cin, cout, layers, groups, add_downsample=i < last)
            for i, (cin, cout) in enumerate(zip(channels_in, block_out_channels, strict=True))
        )
        self.mid_block = UNetMidBlock2D(block_out_channels[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, block_out_channels[-1], eps=EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[-1], 2 * latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)  # [B, 128, H, W]
        for block in self.down_blocks:
            x = block(x)  # halves H, W (except the last)
        x = self.mid_block(x)  # [B, 512, H/8, W/8]
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))  # [B, 8, H/8, W/8]


class Decoder(nn.Module):
    """Latent [B, latent_channels, h, w] -> image [B, 3, h*f, w*f]; each up block has layers+1 ResNets."""

    def __init__(
        self, latent_channels: int, out_channels: int, block_out_channels: list[int], layers: int, groups: int
    ):
        super().__init__()
        reversed_channels = list(reversed(block_out_channels))
        last = len(reversed_channels) - 1
        self.conv_in = nn.Conv2d(latent_channels, reversed_channels[0], 3, padding=1)
        channels_in = [reversed_channels[0], *reversed_channels[:-1]]
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock2D(cin, cout, layers + 1, groups, add_upsample=i < last)
            for i, (cin, cout) in enumerate(zip(channels_in, reversed_channels, strict=True))
        )
        self.mid_block = UNetMidBlock2D(reversed_channels[0], groups)  # after up_blocks, like diffusers' keys
        self.conv_norm_out = nn.GroupNorm(groups, block_out_channels[0], eps=EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)  # [B, 512, h, w]
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x)  # doubles H, W (except the last)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))  # [B, 3, 8h, 8w]


class AutoencoderKL(ModelMixin):
    """Stable Diffusion's VAE with diffusers' config keys and state-dict names.

    `encode(x).latent_dist` is the posterior over latents; `decode(z).sample` the image in about
    [-1, 1]. Latents for the UNet are `vae.encode(x).latent_dist.sample() * vae.config.scaling_factor`;
    decode `z / scaling_factor`. `force_upcast=False` says the VAE is safe in fp16: an fp16 decode
    that overflows is then returned as it is instead of being redone in fp32.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: Sequence[str] = ("DownEncoderBlock2D",),
        up_block_types: Sequence[str] = ("UpDecoderBlock2D",),
        block_out_channels: Sequence[int] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 32,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: Sequence[float] | None = None,
        latents_std: Sequence[float] | None = None,
        force_upcast: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
    ):
        super().__init__()
        reject_unsupported(
            "AutoencoderKL",
            dict(
                shift_factor=(shift_factor, None),
                latents_mean=(latents_mean, None),
                latents_std=(latents_std, None),
                use_quant_conv=(use_quant_conv, True),
                use_post_quant_conv=(use_post_quant_conv, True),
                mid_block_add_attention=(mid_block_add_attention, True),
            ),
        )
        n = len(block_out_channels)
        if set(down_block_types) != {"DownEncoderBlock2D"} or set(up_block_types) != {"UpDecoderBlock2D"}:
            raise ValueError(
                f"only DownEncoderBlock2D / UpDecoderBlock2D are supported, got {down_block_types}"
            )
        if len(down_block_types) != n or len(up_block_types) != n:
            raise ValueError(
                "down_block_types, up_block_types and block_out_channels must have the same length"
            )
        if act_fn != "silu":
            raise ValueError(f"act_fn={act_fn!r} is not supported; Stable Diffusion's VAE uses 'silu'")
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self._scaling_factor = scaling_factor
        self.force_upcast = force_upcast
        self.downscale = 2 ** (n - 1)  # f: 8 for v1.5
        block_out_channels = list(block_out_channels)
        self.encoder = Encoder(
            in_channels, latent_channels, block_out_channels, layers_per_block, norm_num_groups
        )
        self.decoder = Decoder(
            latent_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups
        )
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        # tiling and slicing (diffusers' defaults: a tile is one sample_size image, overlap 1/4)
        self.use_tiling = False
        self.use_slicing = False
        self.tile_sample_min_size = sample_size
        self.tile_latent_min_size = sample_size // self.downscale
        self.tile_overlap_factor = 0.25

    @property
    def scaling_factor(self) -> float:
        """Multiply latents by this before diffusion (1 / std of the training latents; 0.18215 for v1.x)."""
        return self._scaling_factor

    @scaling_factor.setter
    def scaling_factor(self, value: float) -> None:
        self._scaling_factor = float(value)
        if hasattr(self, "config"):  # so that save_pretrained writes it
            self.config["scaling_factor"] = float(value)

    def enable_tiling(self, enabled: bool = True) -> None:
        """Encode / decode images larger than `sample_size` in overlapping, blended tiles."""
        self.use_tiling = enabled

    def enable_slicing(self, enabled: bool = True) -> None:
        """Encode / decode a batch one image at a time (less peak memory, same result)."""
        self.use_slicing = enabled

    def _check_input(self, x: torch.Tensor, channels: int, what: str) -> None:
        if x.ndim != 4:
            raise ValueError(f"{what} must be 4-D [B, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != channels:
            raise ValueError(f"{what} must have {channels} channels (dim 1), got shape {tuple(x.shape)}")

    def _encode(self, x: torch.Tensor, tiled: bool) -> torch.Tensor:
        size = self.tile_sample_min_size
        if tiled and max(x.shape[-2:]) > size:
            return tiled_apply(
                self._encode_tile, x, size, self.tile_latent_min_size, self.tile_overlap_factor
            )
        return self._encode_tile(x)

    def _encode_tile(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))  # [B, 2C, H/f, W/f]

    def encode(
        self, x: torch.Tensor, return_dict: bool = True, tiled: bool | None = None
    ) -> AutoencoderKLOutput | tuple[DiagonalGaussianDistribution]:
        """Image [B, 3, H, W] in [-1, 1] (H, W divisible by f) -> posterior over [B, 4, H/f, W/f].

        Returns `AutoencoderKLOutput(latent_dist)` (a plain 1-tuple with `return_dict=False`).
        `tiled` overrides `enable_tiling()`.
        """
        self._check_input(x, self.in_channels, "the image")
        h, w = x.shape[-2:]
        if h % self.downscale or w % self.downscale:
            f = self.downscale
            raise ValueError(
                f"image height and width must be divisible by {f}, got {h}x{w}; "
                f"resize or crop it to {h // f * f}x{w // f * f}"
            )
        lo, hi = x.min().item(), x.max().item()
        if lo < -1.001 or hi > 1.001:
            raise ValueError(
                f"image values must lie in [-1, 1], got [{lo:.3g}, {hi:.3g}]; "
                "for an image in [0, 1] pass x * 2 - 1 (and divide uint8 pixels by 255 first)"
            )
        tiled = self.use_tiling if tiled is None else tiled
        parts = x.to(self.dtype).split(1) if self.use_slicing and x.shape[0] > 1 else [x.to(self.dtype)]
        posterior = DiagonalGaussianDistribution(torch.cat([self._encode(p, tiled) for p in parts]))
        return AutoencoderKLOutput(posterior) if return_dict else (posterior,)

    def _decode(self, z: torch.Tensor, tiled: bool, post_quant_conv: nn.Module, decoder: nn.Module):
        def decode_tile(z: torch.Tensor) -> torch.Tensor:
            return decoder(post_quant_conv(z))  # [B, 3, f*h, f*w]

        size = self.tile_latent_min_size
        if tiled and max(z.shape[-2:]) > size:
            return tiled_apply(decode_tile, z, size, self.tile_sample_min_size, self.tile_overlap_factor)
        return decode_tile(z)

    def decode(
        self,
        z: torch.Tensor,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
        tiled: bool | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Latent [B, 4, h, w] (already divided by scaling_factor) -> image [B, 3, f*h, f*w].

        Returns `DecoderOutput(sample)` (a plain 1-tuple with `return_dict=False`). `generator`
        is unused, as in diffusers: decoding draws no noise. `tiled` overrides `enable_tiling()`.
        In fp16, an output with inf/NaN (activations above 65504) is decoded again by an fp32
        copy of the decoder and returned in fp16 (unless `force_upcast=False`).
        """
        self._check_input(z, self.latent_channels, "the latent")
        tiled = self.use_tiling if tiled is None else tiled
        z = z.to(self.dtype)
        parts = z.split(1) if self.use_slicing and z.shape[0] > 1 else [z]
        image = torch.cat([self._decode(p, tiled, self.post_quant_conv, self.decoder) for p in parts])
        if self.dtype == torch.float16 and self.force_upcast and not torch.isfinite(image).all():
            image = self._decode_upcast(z, tiled)
        return DecoderOutput(image) if return_dict else (image,)

    def _decode_upcast(self, z: torch.Tensor, tiled: bool) -> torch.Tensor:
        """Decode with fp32 copies of post_quant_conv and the decoder; the module itself is untouched."""
        post_quant_conv = copy.deepcopy(self.post_quant_conv).float()
        decoder = copy.deepcopy(self.decoder).float()
        image = self._decode(z.float(), tiled, post_quant_conv, decoder)
        return image.clamp(-65504, 65504).half()  # fp16's range: no inf from the cast

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Reconstruct an image: encode, take the posterior's mode (or a sample), decode."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z, return_dict=return_dict)
