"""Checkers for the exercises of chapter 09 (LoRA): the layer, its convolution form, its size."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from minisd.book.checks.compare import compare_cases

# Chapter 09: LoRA --------------------------------------------------------------------------------


def _package_lora(base: nn.Module, down: torch.Tensor, up: torch.Tensor, alpha: float) -> nn.Module:
    """The package's LoRA on `base` with A = down and B = up."""
    from minisd.models.lora import LoRA

    layer = LoRA(base)
    layer.add_adapter("check", down.shape[0], alpha)
    with torch.no_grad():
        layer.lora_A["check"].weight.copy_(down)
        layer.lora_B["check"].weight.copy_(up)
    return layer


def lora_linear(candidate_cls: type) -> bool:
    """Chapter 09: `candidate_cls(base: nn.Linear, rank, alpha)` wraps a frozen layer with parameters
    `A` [rank, in] and `B` [out, rank]: forward(x) = base(x) + (alpha / rank) · B·A·x. Checked: the
    shapes; a new layer equals its base (B starts at zero) yet can learn (A is not zero); only A and
    B train; and with A and B set, the output equals the package's `LoRA`."""
    sizes = [(16, 24, 4, 4.0), (32, 8, 2, 8.0), (12, 12, 1, 0.5)]  # (in, out, rank, alpha)

    def base_layer(d_in: int, d_out: int) -> nn.Linear:
        torch.manual_seed(d_in * 100 + d_out)
        return nn.Linear(d_in, d_out)

    def properties(layer_of: Callable, d_in: int, d_out: int, rank: int, alpha: float) -> str:
        base = base_layer(d_in, d_out)
        x = torch.randn(3, d_in, generator=torch.Generator().manual_seed(1))
        want = base(x).detach()
        layer = layer_of(base, rank, alpha)
        a, b = layer.A, layer.B
        trainable = {id(p) for p in layer.parameters() if p.requires_grad}
        return (
            f"A {list(a.shape)}, B {list(b.shape)}; new layer equals its base: "
            f"{torch.allclose(layer(x), want, atol=1e-6)}; A not zero: {bool(a.detach().abs().sum() > 0)}; "
            f"only A and B train: {trainable == {id(a), id(b)}}"
        )

    def output(layer_of: Callable | None, d_in: int, d_out: int, rank: int, alpha: float) -> torch.Tensor:
        gen = torch.Generator().manual_seed(rank)
        down, up = torch.randn(rank, d_in, generator=gen), torch.randn(d_out, rank, generator=gen)
        base = base_layer(d_in, d_out)
        if layer_of is None:
            layer = _package_lora(base, down, up, alpha)
        else:  # the reader's layer: set its A and B
            layer = layer_of(base, rank, alpha)
            with torch.no_grad():
                layer.A.copy_(down)
                layer.B.copy_(up)
        x = torch.randn(2, 5, d_in, generator=gen)  # [B, tokens, in]: any leading dimensions
        with torch.no_grad():
            return layer(x)

    expected = {
        (d_in, d_out, rank): f"A [{rank}, {d_in}], B [{d_out}, {rank}]; new layer equals its base: True; "
        "A not zero: True; only A and B train: True"
        for d_in, d_out, rank, _ in sizes
    }
    cases = [(f"new layer, in {d}, out {o}, r {r}", ("new", d, o, r, a)) for d, o, r, a in sizes]
    cases += [
        (f"A and B set, in {d}, out {o}, r {r}, alpha {a:g}", ("set", d, o, r, a)) for d, o, r, a in sizes
    ]

    def candidate(kind: str, *size) -> str | torch.Tensor:
        return (properties if kind == "new" else output)(candidate_cls, *size)

    def reference(kind: str, d_in: int, d_out: int, rank: int, alpha: float) -> str | torch.Tensor:
        if kind == "new":
            return expected[(d_in, d_out, rank)]
        return output(None, d_in, d_out, rank, alpha)

    return compare_cases("lora_linear", candidate, reference, cases)


def lora_conv(candidate: Callable) -> bool:
    """Chapter 09: `candidate(x [N, in, H, W], base: nn.Conv2d, A [r, in, k, k], B [out, r, 1, 1],
    alpha) -> [N, out, H', W']`, a frozen convolution plus (alpha / r) · B(A(x)): A a convolution
    like the base (its kernel, stride and padding), B a 1x1 convolution, as the package's `LoRA`."""
    layouts = {  # label: (in, out, kernel, stride, padding, rank, alpha)
        "3x3, padding 1": (8, 16, 3, 1, 1, 4, 4.0),
        "3x3, stride 2 (a downsampler)": (8, 8, 3, 2, 1, 2, 1.0),
        "1x1 (proj_in)": (16, 16, 1, 1, 0, 4, 8.0),
        "3x3, no padding, alpha != rank": (4, 6, 3, 1, 0, 3, 1.5),
    }
    cases = []
    for label, (c_in, c_out, k, stride, pad, rank, alpha) in layouts.items():
        gen = torch.Generator().manual_seed(c_in + c_out + k + stride)
        torch.manual_seed(c_in * 7 + c_out)
        base = nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad).requires_grad_(False)
        x = torch.randn(2, c_in, 9, 9, generator=gen)  # [N, in, H, W]
        down = torch.randn(rank, c_in, k, k, generator=gen) / k
        up = torch.randn(c_out, rank, 1, 1, generator=gen)
        cases.append((label, (x, base, down, up, alpha)))

    @torch.no_grad()
    def reference(x, base, down, up, alpha):
        return _package_lora(copy.deepcopy(base), down, up, alpha)(x)

    return compare_cases("lora_conv", candidate, reference, cases, atol=1e-4)


def lora_param_count(candidate: Callable[[nn.Module, int, tuple[str, ...]], int]) -> bool:
    """Chapter 09: `candidate(model, rank, targets) -> int`, the number of parameters that
    `inject_lora(model, rank=rank, target_modules=targets)` adds, without injecting: linear layers
    and convolutions (whose A keeps the kernel), on the tiny UNet and text encoder."""
    from minisd.models import lora
    from minisd.models.clip import CLIPTextModel
    from minisd.models.unet import UNet2DConditionModel
    from minisd.shapes import TINY_CONFIGS

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(TINY_CONFIGS["unet"])
    text_encoder = CLIPTextModel.from_config(TINY_CONFIGS["text_encoder"])

    def reference(model: nn.Module, rank: int, targets: Iterable[str]) -> int:
        injected = copy.deepcopy(model)
        lora.inject_lora(injected, "count", rank, target_modules=targets)
        return sum(p.numel() for p in lora.lora_parameters(injected))

    cases = [
        ("UNet attention, rank 4", (unet, 4, lora.UNET_ATTENTION)),
        ("UNet attention + feed-forward, rank 8", (unet, 8, lora.UNET_ATTENTION + lora.UNET_FEED_FORWARD)),
        ("UNet proj_in/proj_out (1x1 convs), rank 2", (unet, 2, lora.UNET_PROJECTIONS)),
        ("UNet resnet convs (3x3), rank 2", (unet, 2, lora.UNET_RESNET_CONVS)),
        ("text encoder attention + MLP, rank 4", (text_encoder, 4, lora.TEXT_ATTENTION + lora.TEXT_MLP)),
    ]
    return compare_cases("lora_param_count", lambda *a: int(candidate(*a)), reference, cases)
