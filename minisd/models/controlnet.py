"""ControlNet (Zhang et al. 2023, arXiv 2302.05543): a trainable copy of the UNet's encoder.

The copy reads the same noisy latent, timestep and text as the UNet, plus a condition image (edges,
a mask, depth...) that a small convolutional network brings down to the latent's size and adds after
`conv_in`. Every skip the copy produces, and its middle block's output, passes through a 1x1
convolution initialised to zero and is added to the frozen UNet's matching skip / middle output
(`unet(..., down_block_additional_residuals=, mid_block_additional_residual=)`). A fresh ControlNet
therefore changes nothing, and training starts from exactly the base model.
Names and config keys are diffusers' (`controlnet/config.json`), so its files load with no renaming.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from minisd.loading.configs import sd15_config
from minisd.loading.controlnet_file import controlnet_from_original
from minisd.loading.single_file import load_checkpoint
from minisd.loading.state_dict import load_into, read_config
from minisd.models.modeling_utils import ModelMixin, _one_dtype, reject_unsupported
from minisd.models.unet import UNet2DConditionModel

SHARED_WITH_UNET = (
    "in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "mid_block_type",
    "only_cross_attention", "block_out_channels", "layers_per_block", "downsample_padding",
    "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim",
    "transformer_layers_per_block", "encoder_hid_dim", "encoder_hid_dim_type", "attention_head_dim",
    "num_attention_heads", "use_linear_projection", "class_embed_type", "addition_embed_type",
    "addition_time_embed_dim", "num_class_embeds", "upcast_attention", "resnet_time_scale_shift",
    "projection_class_embeddings_input_dim", "addition_embed_type_num_heads",
)  # fmt: skip


class ControlNetOutput(NamedTuple):
    """The residuals for the UNet: one per skip connection (each [B, C_i, H_i, W_i]), and the middle one."""

    down_block_res_samples: list[torch.Tensor]
    mid_block_res_sample: torch.Tensor


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of `module` to zero (the "zero convolution" of the paper); returns it."""
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


class ControlNetConditioningEmbedding(nn.Module):
    """Condition image [B, 3, H, W] in [0, 1] -> features [B, C0, H/8, W/8] for the latent grid.

    conv_in, then pairs of convolutions (the second of each pair with stride 2: one halving per
    pair), SiLU after each; a last convolution, zero at the start, to the UNet's first width C0.
    """

    def __init__(
        self,
        conditioning_embedding_channels: int,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for cin, cout in zip(block_out_channels[:-1], block_out_channels[1:], strict=True):
            self.blocks.append(nn.Conv2d(cin, cin, 3, padding=1))
            self.blocks.append(nn.Conv2d(cin, cout, 3, padding=1, stride=2))
        self.conv_out = zero_module(
            nn.Conv2d(block_out_channels[-1], conditioning_embedding_channels, 3, padding=1)
        )

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(conditioning))
        for conv in self.blocks:
            x = F.silu(conv(x))
        return self.conv_out(x)


def _unet_encoder(options: dict) -> UNet2DConditionModel:
    """A UNet with these options, built on the meta device (no memory): its checks and its
    encoder (conv_in, time_embedding, down_blocks, mid_block) are the ControlNet's."""
    mirror = {"CrossAttnDownBlock2D": "CrossAttnUpBlock2D", "DownBlock2D": "UpBlock2D"}
    up = tuple(mirror.get(name, name) for name in reversed(options["down_block_types"]))
    with torch.device("meta"):
        try:
            return UNet2DConditionModel(up_block_types=up, **options)
        except (NotImplementedError, ValueError) as error:
            raise type(error)(str(error).replace("UNet2DConditionModel", "ControlNetModel")) from None


class ControlNetModel(ModelMixin):
    """The trainable copy: (latents, t, text, condition image) -> residuals for the UNet's skips.

    The constructor takes every key of diffusers' class with its default; options minisd's UNet does
    not implement are refused by name, as there. `ControlNetModel.from_unet(unet)` copies a UNet's
    encoder weights (the paper's initialisation); the zero convolutions start at zero either way.
    """

    def __init__(
        self,
        in_channels: int = 4,
        conditioning_channels: int = 3,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        mid_block_type: str | None = "UNetMidBlock2DCrossAttn",
        only_cross_attention: bool | tuple[bool, ...] = False,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1280,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        attention_head_dim: int | tuple[int, ...] = 8,
        num_attention_heads: int | tuple[int, ...] | None = None,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        projection_class_embeddings_input_dim: int | None = None,
        controlnet_conditioning_channel_order: str = "rgb",
        conditioning_embedding_out_channels: tuple[int, ...] | None = (16, 32, 96, 256),
        global_pool_conditions: bool = False,
        addition_embed_type_num_heads: int = 64,
    ):
        super().__init__()
        if controlnet_conditioning_channel_order not in ("rgb", "bgr"):
            raise ValueError(
                f"controlnet_conditioning_channel_order={controlnet_conditioning_channel_order!r}: "
                "it must be 'rgb' or 'bgr'"
            )
        options = {k: v for k, v in locals().items() if k in SHARED_WITH_UNET}
        unet = _unet_encoder(options)
        self.in_channels, self.cross_attention_dim = in_channels, cross_attention_dim
        self.flip_sin_to_cos, self.freq_shift = flip_sin_to_cos, freq_shift
        self.bgr = controlnet_conditioning_channel_order == "bgr"
        self.global_pool_conditions = global_pool_conditions

        self.conv_in, self.time_embedding = unet.conv_in, unet.time_embedding
        c0 = block_out_channels[0]
        self.controlnet_cond_embedding = ControlNetConditioningEmbedding(
            c0, conditioning_channels, tuple(conditioning_embedding_out_channels)
        )
        self.down_blocks = unet.down_blocks
        # one zero 1x1 convolution per skip, in the order the encoder produces them
        skip_channels = [c0] + [
            block.resnets[0].conv2.out_channels
            for block in unet.down_blocks
            for _ in range(len(block.resnets) + (block.downsamplers is not None))
        ]
        self.controlnet_down_blocks = nn.ModuleList(zero_module(nn.Conv2d(c, c, 1)) for c in skip_channels)
        self.mid_block = unet.mid_block
        self.controlnet_mid_block = zero_module(nn.Conv2d(block_out_channels[-1], block_out_channels[-1], 1))
        self._materialize([self.conv_in, self.time_embedding, self.down_blocks, self.mid_block])

    @staticmethod
    def _materialize(modules: list[nn.Module]) -> None:
        """Give the encoder parts built on the meta device real tensors, with PyTorch's default init."""
        device = torch.empty(0).device  # the device this model is being built on
        for module in modules:
            module.to_empty(device=device)
            for layer in module.modules():
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()

    time_proj = UNet2DConditionModel.time_proj
    _check_inputs = UNet2DConditionModel._check_inputs

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        controlnet_conditioning_channel_order: str = "rgb",
        conditioning_embedding_out_channels: tuple[int, ...] | None = (16, 32, 96, 256),
        load_weights_from_unet: bool = True,
        conditioning_channels: int = 3,
    ) -> ControlNetModel:
        """A ControlNet for `unet`: its config, and (by default) a copy of its encoder's weights."""
        controlnet = cls(
            **{k: unet.config[k] for k in SHARED_WITH_UNET if k in unet.config},
            controlnet_conditioning_channel_order=controlnet_conditioning_channel_order,
            conditioning_embedding_out_channels=conditioning_embedding_out_channels,
            conditioning_channels=conditioning_channels,
        ).to(device=unet.device, dtype=unet.dtype)
        if load_weights_from_unet:
            for name in ("conv_in", "time_embedding", "down_blocks", "mid_block"):
                getattr(controlnet, name).load_state_dict(getattr(unet, name).state_dict())
        return controlnet

    @classmethod
    def from_single_file(
        cls,
        pretrained_model_link_or_path: str | os.PathLike,
        config: str | os.PathLike | dict | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> ControlNetModel:
        """Load an original ControlNet 1.0 / 1.1 file (`.pth` / `.ckpt` read without running code, or
        `.safetensors`). `config`: a diffusers ControlNet folder or dict; None means SD v1.5's UNet
        with the condition embedding's default widths, `conditioning_channels` read from the file."""
        path = Path(pretrained_model_link_or_path)
        state = load_checkpoint(path)
        if config is None:
            hint = state.get(
                "control_model.input_hint_block.0.weight", state.get("input_hint_block.0.weight")
            )
            config = {
                **sd15_config("unet"),
                **({} if hint is None else {"conditioning_channels": hint.shape[1]}),
            }
        elif not isinstance(config, dict):
            config = read_config(config)
        with torch.device("meta"):
            model = cls.from_config(config)
        converted = controlnet_from_original(state, dict(model.config), path.name)
        return load_into(model, converted, dtype=_one_dtype(dtype, torch_dtype), device=device)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        controlnet_cond: torch.Tensor,
        conditioning_scale: float = 1.0,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guess_mode: bool = False,
        return_dict: bool = True,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> ControlNetOutput | tuple[list[torch.Tensor], torch.Tensor]:
        """Residuals for the UNet's skips and middle block, scaled by `conditioning_scale`.

        sample [B, 4, h, w]; controlnet_cond [B, conditioning_channels, 8h, 8w] in [0, 1].
        `guess_mode` scales the skips from 0.1 (the first, finest) to 1.0 (the middle) on a log
        scale, so the condition may speak without a prompt. minisd's own `encoder_attention_mask`
        [B, L] hides text tokens, as in the UNet.
        """
        reject_unsupported(
            "ControlNetModel.forward",
            dict(
                class_labels=(class_labels, None),
                timestep_cond=(timestep_cond, None),
                attention_mask=(attention_mask, None),
                added_cond_kwargs=(added_cond_kwargs, None),
                cross_attention_kwargs=(cross_attention_kwargs, None),
            ),
        )
        self._check_inputs(sample, encoder_hidden_states)
        b, _, h, w = sample.shape
        cond_channels = self.controlnet_cond_embedding.conv_in.in_channels
        factor = 2 ** (len(self.controlnet_cond_embedding.blocks) // 2)
        if controlnet_cond.ndim != 4 or controlnet_cond.shape[1:] != (cond_channels, h * factor, w * factor):
            raise ValueError(
                f"controlnet_cond has shape {tuple(controlnet_cond.shape)}; expected [B, {cond_channels}, "
                f"{h * factor}, {w * factor}]: a {cond_channels}-channel condition image, {factor}x the "
                "latent's size"
            )
        mask = None if encoder_attention_mask is None else encoder_attention_mask.bool()[:, None, None, :]
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim > 1 or t.numel() not in (1, b):
            raise ValueError(f"timestep has shape {tuple(t.shape)}; expected a number, a 0-d tensor or [{b}]")
        temb = self.time_embedding(self.time_proj(t.reshape(-1).expand(b)).to(sample.dtype))  # [B, 4 * C0]

        if self.bgr:
            controlnet_cond = controlnet_cond.flip(1)
        x = self.conv_in(sample) + self.controlnet_cond_embedding(controlnet_cond)  # [B, C0, h, w]
        skips = (x,)
        for block in self.down_blocks:
            x, block_skips = block(x, temb, encoder_hidden_states, mask)
            skips += block_skips
        x = self.mid_block(x, temb, encoder_hidden_states, mask)

        down = [conv(s) for conv, s in zip(self.controlnet_down_blocks, skips, strict=True)]
        mid = self.controlnet_mid_block(x)
        if guess_mode and not self.global_pool_conditions:
            scales = torch.logspace(-1, 0, len(down) + 1, device=sample.device) * conditioning_scale
            down = [d * s for d, s in zip(down, scales, strict=False)]
            mid = mid * scales[-1]
        else:
            down = [d * conditioning_scale for d in down]
            mid = mid * conditioning_scale
        if self.global_pool_conditions:  # one vector per channel: the condition says "what", not "where"
            down = [d.mean(dim=(2, 3), keepdim=True) for d in down]
            mid = mid.mean(dim=(2, 3), keepdim=True)
        return ControlNetOutput(down, mid) if return_dict else (down, mid)


class MultiControlNetModel(nn.Module):
    """Several ControlNets at once, each with its condition image and scale: their residuals add up."""

    def __init__(self, controlnets: list[ControlNetModel] | tuple[ControlNetModel, ...]):
        super().__init__()
        self.nets = nn.ModuleList(controlnets)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        controlnet_cond: list[torch.Tensor],
        conditioning_scale: list[float],
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guess_mode: bool = False,
        return_dict: bool = True,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> ControlNetOutput | tuple[list[torch.Tensor], torch.Tensor]:
        """The sum of every net's residuals (a net at scale 0 adds exact zeros, so it is not run)."""
        if not (len(controlnet_cond) == len(conditioning_scale) == len(self.nets)):
            raise ValueError(
                f"{len(controlnet_cond)} condition images and {len(conditioning_scale)} scales for "
                f"{len(self.nets)} ControlNets: give one of each per ControlNet"
            )
        down, mid = None, None
        for net, image, scale in zip(self.nets, controlnet_cond, conditioning_scale, strict=True):
            if scale == 0 and down is not None:
                continue
            d, m = net(
                sample, timestep, encoder_hidden_states, image, scale, class_labels, timestep_cond,
                attention_mask, added_cond_kwargs, cross_attention_kwargs, guess_mode, False,
                encoder_attention_mask,
            )  # fmt: skip
            down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
            mid = m if mid is None else mid + m
        return ControlNetOutput(down, mid) if return_dict else (down, mid)
