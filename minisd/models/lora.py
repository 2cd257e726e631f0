"""LoRA: low-rank adapters on a frozen model (chapter 09; Hu et al. 2021, arXiv 2106.09685).

A weight W [out, in] is left as it is; an adapter learns the update ΔW = B·A with A [r, in] and
B [out, r], r much smaller than in and out, and adds (alpha / r) · B·A·x to the layer's output.
A starts random and B at zero, so a new adapter changes nothing until it is trained. A convolution
gets A as a convolution with the base kernel (r output channels) and B as a 1x1 convolution.

`LoRA` wraps one nn.Linear or nn.Conv2d and holds any number of named adapters; the functions
below inject it by module name, switch adapters, scale, fuse and remove them on a whole model.
Removing every adapter puts the original layer objects back, so the model is as it was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

# module names (the part after the last block index) that adapters go on, by what they are
UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
UNET_PROJECTIONS = ("proj_in", "proj_out")
UNET_FEED_FORWARD = ("ff.net.0.proj", "ff.net.2")
UNET_RESNET_CONVS = ("conv1", "conv2")
TEXT_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
TEXT_MLP = ("fc1", "fc2")


class LoRA(nn.Module):
    """A frozen nn.Linear / nn.Conv2d (`base_layer`) plus named low-rank adapters.

    forward(x) = base_layer(x) + sum over active, unfused adapters a of
                 weight[a] * call_scale * (alpha_a / r_a) * B_a(A_a(dropout_a(x)))
    """

    def __init__(self, base_layer: nn.Linear | nn.Conv2d):
        super().__init__()
        if isinstance(base_layer, nn.Conv2d) and base_layer.groups != 1:
            raise ValueError("LoRA on a grouped convolution is not supported")
        if not isinstance(base_layer, nn.Linear | nn.Conv2d):
            raise TypeError(f"LoRA wraps nn.Linear or nn.Conv2d, not {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.lora_A, self.lora_B = nn.ModuleDict(), nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}  # alpha / r
        self.weights: dict[str, float] = {}  # the user's per-adapter weight (set_adapters)
        self.active: list[str] = []
        self.enabled = True
        self.call_scale = 1.0  # one call's extra factor (cross_attention_kwargs={"scale": s})
        self.fused: list[str] = []
        # the exact base weight while adapters are fused (a buffer, so it moves with .to())
        self.register_buffer("_unfused_weight", None, persistent=False)

    def add_adapter(
        self, name: str, rank: int, alpha: float | None = None, dropout: float = 0.0, init: str = "kaiming"
    ) -> None:
        """A new adapter of rank `rank` (alpha defaults to the rank: scaling 1), made active.
        init "kaiming" (PEFT's default) or "gaussian" (the paper: A ~ N(0, 1/r)); B is zero."""
        if name in self.lora_A:
            raise ValueError(f"an adapter named {name!r} already exists")
        base = self.base_layer
        w = base.weight
        if isinstance(base, nn.Linear):
            down = nn.Linear(base.in_features, rank, bias=False)
            up = nn.Linear(rank, base.out_features, bias=False)
        else:
            conv = dict(stride=base.stride, padding=base.padding, dilation=base.dilation, bias=False)
            down = nn.Conv2d(base.in_channels, rank, base.kernel_size, **conv)
            up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        if init == "gaussian":
            nn.init.normal_(down.weight, std=1 / rank)
        elif init == "kaiming":
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
        else:
            raise ValueError(f"unknown init {init!r}: 'kaiming' or 'gaussian'")
        nn.init.zeros_(up.weight)
        self.lora_A[name], self.lora_B[name] = down.to(w.device, w.dtype), up.to(w.device, w.dtype)
        self.lora_dropout[name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling[name] = (rank if alpha is None else alpha) / rank
        self.weights[name] = 1.0
        self.active.append(name)

    def delete_adapter(self, name: str) -> None:
        if name in self.fused:
            raise ValueError(f"adapter {name!r} is fused into the weights: unfuse it first")
        for store in (self.lora_A, self.lora_B, self.lora_dropout):
            del store[name]
        del self.scaling[name], self.weights[name]
        self.active = [a for a in self.active if a != name]

    def rank(self, name: str) -> int:
        return self.lora_A[name].weight.shape[0]

    def delta_weight(self, name: str) -> torch.Tensor:
        """ΔW = (alpha / r) · weight · B·A, shaped like the base weight ([out, in] or [out, in, k, k])."""
        a, b = self.lora_A[name].weight, self.lora_B[name].weight
        delta = b.flatten(1) @ a.flatten(1)  # [out, r] @ [r, in·k·k] -> [out, in·k·k]
        return delta.view_as(self.base_layer.weight) * self.scaling[name] * self.weights[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if not self.enabled:
            return out
        for name in self.active:
            if name in self.fused:
                continue
            factor = self.scaling[name] * self.weights[name] * self.call_scale
            h = self.lora_A[name](self.lora_dropout[name](x.to(self.lora_A[name].weight.dtype)))
            out = out + factor * self.lora_B[name](h).to(out.dtype)
        return out

    @torch.no_grad()
    def fuse(self, names: Iterable[str] | None = None, scale: float = 1.0) -> None:
        """Add scale · ΔW of the given adapters (default: the active ones) into the base weight;
        the exact original weight is kept, so `unfuse` restores it bit for bit."""
        names = [n for n in (self.active if names is None else names) if n not in self.fused]
        if not names:
            return
        w = self.base_layer.weight
        if self._unfused_weight is None:
            self._unfused_weight = w.detach().clone()
        w += sum(scale * self.delta_weight(n).to(w.dtype) for n in names)
        self.fused += names

    @torch.no_grad()
    def unfuse(self) -> None:
        if self._unfused_weight is not None:
            self.base_layer.weight.copy_(self._unfused_weight)
        self._unfused_weight, self.fused = None, []

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: r={self.rank(n)}, scaling={self.scaling[n]:g}" for n in self.lora_A)


def _matches(name: str, targets: Iterable[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def lora_layers(model: nn.Module) -> dict[str, LoRA]:
    """The LoRA-wrapped layers of a model, by the name of the layer they wrap."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRA)}


def inject_lora(
    model: nn.Module,
    adapter_name: str = "default",
    rank: int = 4,
    alpha: float | None = None,
    target_modules: Iterable[str] = UNET_ATTENTION,
    dropout: float = 0.0,
    init: str = "kaiming",
) -> list[str]:
    """Add an adapter to every nn.Linear / nn.Conv2d whose name ends with one of `target_modules`
    (e.g. "to_q" matches "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q").
    Returns the names of the layers adapted; fails if there are none."""
    targets = tuple(target_modules)
    names = [
        n
        for n, m in model.named_modules()
        if _matches(n, targets) and isinstance(m, nn.Linear | nn.Conv2d | LoRA) and ".base_layer" not in n
    ]
    if not names:
        raise ValueError(f"no nn.Linear or nn.Conv2d in {type(model).__name__} matches {list(targets)}")
    for name in names:
        add_lora_layer(model, name, adapter_name, rank, alpha, dropout, init)
    return names


def add_lora_layer(
    model: nn.Module,
    name: str,
    adapter_name: str,
    rank: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    init: str = "kaiming",
) -> LoRA:
    """Wrap the layer called `name` (if not yet wrapped) and add an adapter to it."""
    layer = model.get_submodule(name)
    if not isinstance(layer, LoRA):
        layer = LoRA(layer)
        _set_module(model, name, layer)
    layer.add_adapter(adapter_name, rank, alpha, dropout, init)
    return layer


def adapter_names(model: nn.Module) -> list[str]:
    """Every adapter in the model, in the order they were added."""
    names: dict[str, None] = {}
    for layer in lora_layers(model).values():
        names.update(dict.fromkeys(layer.lora_A))
    return list(names)


def set_adapters(model: nn.Module, names: list[str], weights: list[float] | None = None) -> None:
    """Make exactly `names` active, each with its weight (default 1.0); other adapters stay loaded."""
    weights = [1.0] * len(names) if weights is None else list(weights)
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} adapter weights for {len(names)} adapters")
    if missing := sorted(set(names) - set(adapter_names(model))):
        raise ValueError(f"no adapter named {missing} in {type(model).__name__}: {adapter_names(model)}")
    for layer in lora_layers(model).values():
        layer.active = [n for n in names if n in layer.lora_A]
        for n, w in zip(names, weights, strict=True):
            if n in layer.weights:
                layer.weights[n] = float(w)


def enable_lora(model: nn.Module, enabled: bool = True) -> None:
    """Switch every adapter's contribution on or off (fused adapters stay in the weights)."""
    for layer in lora_layers(model).values():
        layer.enabled = enabled


@contextmanager
def lora_scale(model: nn.Module, scale: float) -> Iterator[None]:
    """Multiply every adapter's contribution by `scale` inside the block (one pipeline call)."""
    layers = list(lora_layers(model).values())
    for layer in layers:
        layer.call_scale = scale
    try:
        yield
    finally:
        for layer in layers:
            layer.call_scale = 1.0


def fuse_lora(model: nn.Module, scale: float = 1.0, names: list[str] | None = None) -> None:
    """Fold the active adapters (or `names`) into the weights: same outputs, no extra cost per call."""
    for layer in lora_layers(model).values():
        layer.fuse(None if names is None else [n for n in names if n in layer.lora_A], scale)


def unfuse_lora(model: nn.Module) -> None:
    """Restore the exact weights from before `fuse_lora`; the adapters work unfused again."""
    for layer in lora_layers(model).values():
        layer.unfuse()


def remove_lora(model: nn.Module, names: Iterable[str] | None = None) -> None:
    """Delete adapters (default: all). A layer left without adapters is replaced by its original
    layer object; fused weights stay fused, as after diffusers' fuse_lora + unload_lora_weights."""
    for name, layer in lora_layers(model).items():
        for adapter in list(layer.lora_A) if names is None else [n for n in names if n in layer.lora_A]:
            if adapter in layer.fused:  # keep it in the weights, drop the copy that could undo it
                layer.fused.remove(adapter)
                layer._unfused_weight = None if not layer.fused else layer._unfused_weight
            layer.delete_adapter(adapter)
        if not layer.lora_A:
            _set_module(model, name, layer.base_layer)


def lora_parameters(model: nn.Module, names: Iterable[str] | None = None) -> list[nn.Parameter]:
    """The adapters' parameters (default: all adapters), e.g. for an optimizer."""
    wanted = None if names is None else set(names)
    return [
        p
        for layer in lora_layers(model).values()
        for store in (layer.lora_A, layer.lora_B)
        for n, module in store.items()
        if wanted is None or n in wanted
        for p in module.parameters()
    ]
