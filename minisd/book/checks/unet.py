"""Checkers for chapter 04's exercises on the UNet: the skip-connection bookkeeping of the up path, the
parameter count of a ResNet block, and a UNet forward pass assembled from a model's blocks.

The references are the package's own modules: the skips are read off a forward pass (on the `meta`
device, so no arithmetic), the counts off a built block, the forward off `UNet2DConditionModel`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from minisd.book.checks.compare import compare_cases


def _unet_config(block_out_channels: list[int], layers_per_block: int, cross_attention: bool) -> dict:
    """A UNet config of SD's block structure: cross-attention at every level but the deepest."""
    n = len(block_out_channels)
    down, up = (
        ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D") if cross_attention else ("DownBlock2D", "UpBlock2D")
    )
    return {
        "block_out_channels": list(block_out_channels),
        "layers_per_block": layers_per_block,
        "down_block_types": [down] * (n - 1) + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + [up] * (n - 1),
        "norm_num_groups": 8,
        "attention_head_dim": 2,
        "cross_attention_dim": 16,
    }


def _as_tuples(value):
    """Lists and tuples nested to any depth, as tuples (so `[[(1, 2)]]` equals `(((1, 2),),)`)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@functools.cache
def _skip_pairs(block_out_channels: tuple[int, ...], layers_per_block: int) -> tuple:
    """`up_block_skips`'s reference: (from below, skip) widths per up block and resnet, read off a forward
    pass on the `meta` device (skips recorded where the down path saves them, resnet inputs where the
    up path reads them), paired last saved, first used."""
    from minisd.models.unet import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            _unet_config(list(block_out_channels), layers_per_block, False)
        )
    saved, widths = [], []
    hooks = [unet.conv_in.register_forward_hook(lambda m, a, out: saved.append(out.shape[1]))]
    hooks += [b.register_forward_hook(lambda m, a, out: saved.extend(s.shape[1] for s in out[1]))
              for b in unet.down_blocks]  # fmt: skip
    hooks += [r.register_forward_pre_hook(lambda m, a: widths.append(a[0].shape[1]))
              for b in unet.up_blocks for r in b.resnets]  # fmt: skip
    side = 2 ** (len(block_out_channels) - 1)
    with torch.device("meta"):
        unet(torch.empty(1, 4, side, side), 1, torch.empty(1, 77, 16))
    for h in hooks:
        h.remove()
    pairs = [(width - skip, skip) for width, skip in zip(widths, reversed(saved), strict=True)]
    per_block = []
    for block in unet.up_blocks:
        per_block.append(tuple(pairs[: len(block.resnets)]))
        pairs = pairs[len(block.resnets) :]
    return tuple(per_block)


def up_block_skips(candidate: Callable[[list[int], int], list[list[tuple[int, int]]]]) -> bool:
    """Check `candidate(block_out_channels, layers_per_block)`: for each up block (in the order they run,
    deepest first) and each of its resnets, `(channels from below, channels of the skip)` it concatenates.

    The reference (`_skip_pairs`) reads them off a UNet of that config run on the `meta` device.
    """
    cases = [
        ("SD v1.5: [320, 640, 1280, 1280], 2 per block", ([320, 640, 1280, 1280], 2)),
        ("the tiny model: [32, 64, 64], 1 per block", ([32, 64, 64], 1)),
        ("two levels [64, 128], 3 per block", ([64, 128], 3)),
        ("every level wider: [32, 64, 128, 256], 1 per block", ([32, 64, 128, 256], 1)),
    ]
    return compare_cases(
        "up_block_skips", lambda *a: _as_tuples(candidate(*a)), lambda c, n: _skip_pairs(tuple(c), n), cases
    )


def resnet_param_count(candidate: Callable[[int, int, int | None], int]) -> bool:
    """Check `candidate(in_channels, out_channels, temb_channels) -> int`, the number of parameters of
    `ResnetBlock2D(in_channels, out_channels, temb_channels)` (temb_channels None: the VAE's block, no
    time embedding), against the block itself."""
    from minisd.models.resnet import ResnetBlock2D

    def reference(in_channels: int, out_channels: int, temb_channels: int | None) -> int:
        with torch.device("meta"):
            block = ResnetBlock2D(in_channels, out_channels, temb_channels)
        return sum(p.numel() for p in block.parameters())

    cases = [
        ("320 -> 320, temb 1280 (down_blocks.0)", (320, 320, 1280)),
        ("320 -> 640, temb 1280 (down_blocks.1, first resnet)", (320, 640, 1280)),
        ("2560 -> 1280, temb 1280 (an up-path resnet reading a skip)", (2560, 1280, 1280)),
        ("64 -> 64, temb 128", (64, 64, 128)),
        ("512 -> 256, no time embedding (the VAE's)", (512, 256, None)),
    ]
    return compare_cases("resnet_param_count", candidate, reference, cases)


@functools.cache
def _forward_cases() -> tuple:
    """`unet_forward`'s cases, built once: (label, (unet, sample, timesteps, text), unet's output)."""
    from minisd.models.unet import UNet2DConditionModel

    cases = []
    for label, channels, layers, batch in [
        ("two levels [32, 64], 1 resnet per down block", [32, 64], 1, 1),
        ("two levels [16, 32], 2 per block, batch 2", [16, 32], 2, 2),
        ("three levels [16, 32, 32], 1 per block", [16, 32, 32], 1, 2),
    ]:
        torch.manual_seed(len(cases))
        unet = UNet2DConditionModel.from_config(_unet_config(channels, layers, True)).eval()
        for p in unet.parameters():  # bigger weights than the init, so that no part's effect is negligible
            p.data.normal_(0, 0.2)
        side = 2 ** len(channels)
        sample, text = torch.randn(batch, 4, side, side), torch.randn(batch, 5, 16)
        t = torch.tensor([981, 21][:batch])
        with torch.no_grad():
            cases.append((label, (unet, sample, t, text), unet(sample, t, text).sample))
    return tuple(cases)


def unet_forward(candidate: Callable) -> bool:
    """Check `candidate(unet, sample, timesteps, encoder_hidden_states) -> noise prediction` (timesteps:
    [B]), written with the model's parts (`time_proj`, `time_embedding`, `conv_in`, `down_blocks`,
    `mid_block`, `up_blocks`, `conv_norm_out`, `conv_act`, `conv_out`) and not `unet.forward`, against
    `unet(...).sample` on small random UNets of two and three levels."""
    expected = {id(args[1]): out for _, args, out in _forward_cases()}  # keyed by the sample tensor
    cases = [(label, args) for label, args, _ in _forward_cases()]

    def reference(unet, sample, timesteps, encoder_hidden_states):
        return expected[id(sample)]

    def reader(unet, sample, timesteps, encoder_hidden_states):
        called = []
        handle = unet.register_forward_pre_hook(lambda m, a: called.append(True))
        try:
            with torch.no_grad():
                out = candidate(unet, sample, timesteps, encoder_hidden_states)
        finally:
            handle.remove()
        if called:
            raise RuntimeError("it called unet(...) itself: assemble the forward pass from the blocks")
        return out

    return compare_cases("unet_forward", reader, reference, cases, atol=1e-4)
