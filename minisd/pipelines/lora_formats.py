"""LoRA files as people share them, read and written (chapter 09).

Three spellings of the same thing, an adapter's A ("down") and B ("up") per adapted layer:
    diffusers / PEFT   unet.<module>.lora_A.weight, .lora_B.weight       text_encoder.<module>...
    older diffusers    unet.<block>.attn1.processor.to_q_lora.down.weight, .up.weight
                       text_encoder.<module>.lora_linear_layer.down.weight, <module>.lora.down.weight
    kohya / A1111      lora_unet_down_blocks_0_attentions_0_..._attn1_to_q.lora_down.weight,
                       .lora_up.weight, .alpha                            lora_te_text_model_encoder_...
kohya's flat names are the model's module names with "." turned into "_"; the map back is built
from the model itself, not from a hand-written list. An optional alpha gives the scaling alpha / r
(absent: 1). Every key must find its layer: a file that does not fit is refused as a whole, with
the keys or shapes that do not fit, never loaded in part.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import save_file
from torch import nn

from minisd.loading.single_file import load_checkpoint
from minisd.loading.state_dict import CheckpointError
from minisd.models.lora import LoRA, add_lora_layer, lora_layers

COMPONENTS = ("unet", "text_encoder")
KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
DEFAULT_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what diffusers writes in a LoRA folder
# older diffusers: the attention processor's own names for the four projections
PROCESSOR_NAMES = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}
# keys that only SDXL files have: a second text encoder, the added-conditioning embedding, sgm names
SDXL_MARKERS = ("lora_te1_", "lora_te2_", "text_encoder_2.", "add_embedding", "input_blocks", "label_emb")


class LoRAWeights(NamedTuple):
    """One adapted layer: down = A [r, in] (or [r, in, k, k]), up = B [out, r] (or [out, r, 1, 1])."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None


def read_lora_file(path: str | os.PathLike, weight_name: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a LoRA file (.safetensors, or a pickled .pt/.ckpt/.bin read with
    torch.load(weights_only=True), which never runs code), or of `weight_name` in a folder."""
    path = Path(path)
    if path.is_dir():
        path = path / (weight_name or DEFAULT_WEIGHT_NAME)
    return load_checkpoint(path)


def kohya_names(model: nn.Module, prefix: str) -> dict[str, str]:
    """kohya's flat name -> module name, for every Linear / Conv2d of the model (LoRA-wrapped ones too)."""
    inside = (".base_layer", ".lora_A.", ".lora_B.")  # a wrapped layer's parts: the wrapper stands for them
    return {
        prefix + name.replace(".", "_"): name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.Conv2d | LoRA) and not any(p in name for p in inside)
    }


def _diffusers_module(rest: str) -> tuple[str, str] | None:
    """'<module>.lora_A.weight' (and the older spellings) -> (module, 'down' | 'up' | 'alpha')."""
    if m := re.fullmatch(r"(.+)\.lora_([AB])\.weight", rest):
        return m[1], "down" if m[2] == "A" else "up"
    if m := re.fullmatch(r"(.+)\.processor\.(to_[qkv]_lora|to_out_lora)\.(down|up)\.weight", rest):
        return f"{m[1]}.{PROCESSOR_NAMES[m[2]]}", m[3]
    if m := re.fullmatch(r"(.+)\.(?:lora|lora_linear_layer)\.(down|up)\.weight", rest):
        return m[1], m[2]
    if m := re.fullmatch(r"(.+)\.alpha", rest):
        return m[1], "alpha"
    return None


def _place(key: str, models: dict[str, nn.Module], kohya: dict[str, dict[str, str]]):
    """(component, module, part) for one key of the file, or None when it has no place here."""
    for component in models:
        prefix = KOHYA_PREFIX[component]
        if key.startswith(prefix):
            flat, _, part = key.partition(".")
            part = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}.get(part)
            module = kohya[component].get(flat)
            return (component, module, part) if module and part else None
        if key.startswith(component + "."):
            found = _diffusers_module(key[len(component) + 1 :])
            if found is None:
                return None
            module, part = found
            for candidate in (module, "text_model." + module, module.removeprefix("text_model.")):
                if candidate in kohya[component].values():
                    return component, candidate, part
            return None
    return None


def parse_lora_state_dict(
    state_dict: dict[str, torch.Tensor], models: dict[str, nn.Module], source: str = "the LoRA"
) -> dict[str, dict[str, LoRAWeights]]:
    """Sort a LoRA state dict (any of the three spellings) into {component: {module: LoRAWeights}},
    checking that every key has a place and every shape fits; raises CheckpointError otherwise."""
    if sdxl := sorted(k for k in state_dict if any(m in k for m in SDXL_MARKERS)):
        raise CheckpointError(
            f"{source} is a LoRA for Stable Diffusion XL ({len(sdxl)} keys such as {sdxl[0]!r}); "
            "minisd loads LoRAs made for SD 1.x"
        )
    kohya = {c: kohya_names(m, KOHYA_PREFIX[c]) for c, m in models.items()}
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unplaced = []
    for key, tensor in state_dict.items():
        place = _place(key, models, kohya)
        if place is None:
            unplaced.append(key)
        else:
            parts.setdefault(place[:2], {})[place[2]] = tensor
    if unplaced:
        raise CheckpointError(
            f"{source}: {len(unplaced)} of {len(state_dict)} keys have no place in this model "
            f"({', '.join(models)}): {_short(sorted(unplaced))}. Is it a LoRA for SD 1.x, in the "
            "diffusers/PEFT or kohya format?"
        )
    out: dict[str, dict[str, LoRAWeights]] = {c: {} for c in models}
    problems = []
    for (component, module), found in sorted(parts.items()):
        if "down" not in found or "up" not in found:
            problems.append(f"{component}.{module}: has {sorted(found)}, needs both down (A) and up (B)")
            continue
        base = models[component].get_submodule(module)
        base = base.base_layer if isinstance(base, LoRA) else base
        weights = LoRAWeights(found["down"], found["up"], float(found["alpha"]) if "alpha" in found else None)
        try:
            out[component][module] = _fit(weights, base)
        except ValueError as e:
            problems.append(f"{component}.{module}: {e}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit this model; a LoRA for another model (SD 2.x's text encoder is "
            f"1024 wide, SD 1.x's 768) or a damaged file? {_short(problems, 6)}"
        )
    return out


def _fit(w: LoRAWeights, base: nn.Linear | nn.Conv2d) -> LoRAWeights:
    """Check A and B against the layer (a 1x1 convolution and a linear layer take either layout)."""
    down, up = w.down, w.up
    rank = down.shape[0]
    if isinstance(base, nn.Linear):
        down = down.flatten(1) if down.ndim == 4 and down.shape[2:] == (1, 1) else down
        up = up.flatten(1) if up.ndim == 4 else up
        want_down, want_up = (rank, base.in_features), (base.out_features, rank)
    else:
        k = tuple(base.kernel_size)
        down = down[:, :, None, None] if down.ndim == 2 and k == (1, 1) else down
        up = up[:, :, None, None] if up.ndim == 2 else up
        want_down, want_up = (rank, base.in_channels, *k), (base.out_channels, rank, 1, 1)
    if tuple(down.shape) != want_down or tuple(up.shape) != want_up:
        raise ValueError(
            f"down {tuple(w.down.shape)} and up {tuple(w.up.shape)}, but this layer needs "
            f"down {want_down} and up {want_up} (rank {rank})"
        )
    return LoRAWeights(down, up, w.alpha)


def _short(items: list[str], limit: int = 8) -> str:
    return "; ".join(items[:limit]) + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


@torch.no_grad()
def load_lora_into_models(
    state_dict: dict[str, torch.Tensor], models: dict[str, nn.Module], adapter_name: str, source: str
) -> dict[str, list[str]]:
    """Check the whole file first, then add adapter `adapter_name` to every layer it names.
    Returns {component: adapted module names}."""
    parsed = parse_lora_state_dict(state_dict, models, source)
    for model in models.values():
        if any(adapter_name in layer.lora_A for layer in lora_layers(model).values()):
            raise ValueError(
                f"an adapter named {adapter_name!r} is already loaded: pick another adapter_name"
            )
    if not any(parsed.values()):
        raise CheckpointError(f"{source} holds no LoRA weights")
    for component, layers in parsed.items():
        for module, w in layers.items():
            layer = add_lora_layer(models[component], module, adapter_name, w.down.shape[0], w.alpha)
            layer.lora_A[adapter_name].weight.copy_(w.down)
            layer.lora_B[adapter_name].weight.copy_(w.up)
    return {c: list(layers) for c, layers in parsed.items()}


def lora_state_dict(
    models: dict[str, nn.Module], adapter_name: str = "default", format: str = "peft"
) -> dict[str, torch.Tensor]:
    """One adapter's weights as a file's state dict. "peft": diffusers' `<component>.<module>.lora_A.weight`
    with alpha / r folded into B (that format has no alpha key); "kohya": lora_down/lora_up/alpha."""
    if format not in ("peft", "kohya"):
        raise ValueError(f"unknown LoRA format {format!r}: 'peft' or 'kohya'")
    out = {}
    for component, model in models.items():
        for module, layer in lora_layers(model).items():
            if adapter_name not in layer.lora_A:
                continue
            down = layer.lora_A[adapter_name].weight.detach().contiguous()
            up = layer.lora_B[adapter_name].weight.detach()
            if format == "peft":
                out[f"{component}.{module}.lora_A.weight"] = down
                out[f"{component}.{module}.lora_B.weight"] = (up * layer.scaling[adapter_name]).contiguous()
            else:
                flat = KOHYA_PREFIX[component] + module.replace(".", "_")
                out[f"{flat}.lora_down.weight"] = down
                out[f"{flat}.lora_up.weight"] = up.contiguous()
                out[f"{flat}.alpha"] = torch.tensor(layer.scaling[adapter_name] * layer.rank(adapter_name))
    if not out:
        raise ValueError(f"no adapter named {adapter_name!r} in {', '.join(models)}")
    return out


def save_lora_file(state_dict: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a LoRA state dict as .safetensors (the format to share: it cannot carry code)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: LoRA files are written as .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu().contiguous() for k, v in state_dict.items()}, str(path), metadata={"format": "pt"})
    return path
