"""LoRA on a pipeline, with diffusers' method names (chapter 09): load_lora_weights, set_adapters,
fuse_lora / unfuse_lora, unload_lora_weights, and a per-call scale via cross_attention_kwargs."""

from __future__ import annotations

import functools
import inspect
import os
from contextlib import ExitStack

import torch

from minisd.models import lora
from minisd.models.modeling_utils import reject_unsupported
from minisd.pipelines.lora_formats import load_lora_into_models, read_lora_file

LORA_COMPONENTS = ("unet", "text_encoder")


def apply_lora_scale(call):
    """Decorates a pipeline's __call__: `cross_attention_kwargs={"scale": s}` scales every adapter of
    the UNet and the text encoder by s for that call (as diffusers does); other keys pass on."""

    signature = inspect.signature(call)

    @functools.wraps(call)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        extra = dict(bound.arguments.get("cross_attention_kwargs") or {})
        scale = extra.pop("scale", 1.0)
        bound.arguments["cross_attention_kwargs"] = extra or None
        with ExitStack() as stack:
            for model in self._lora_models().values():
                stack.enter_context(lora.lora_scale(model, scale))
            return call(*bound.args, **bound.kwargs)

    return wrapper


def _as_list(names: str | list[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


class StableDiffusionLoraLoaderMixin:
    """The LoRA methods of diffusers' pipelines, for a pipeline with `.unet` and `.text_encoder`."""

    def _lora_models(self, components: list[str] | tuple[str, ...] = LORA_COMPONENTS) -> dict:
        unknown = sorted(set(components) - set(LORA_COMPONENTS))
        if unknown:
            raise ValueError(f"unknown components {unknown}: LoRA goes on {list(LORA_COMPONENTS)}")
        return {name: getattr(self, name) for name in components}

    def load_lora_weights(
        self,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        adapter_name: str | None = None,
        hotswap: bool = False,
        **kwargs,
    ) -> None:
        """Load a LoRA (a .safetensors/.pt file, a folder with `weight_name` in it, or a state dict;
        diffusers/PEFT, older diffusers or kohya keys) as adapter `adapter_name` (default
        "default_<n>"), active alongside those already loaded."""
        weight_name = kwargs.pop("weight_name", None)
        reject_unsupported("load_lora_weights", dict(hotswap=(hotswap, False)))
        if kwargs:
            raise TypeError(f"load_lora_weights: unsupported arguments {sorted(kwargs)}")
        source = pretrained_model_name_or_path_or_dict
        if isinstance(source, dict):
            state_dict, name = dict(source), "the LoRA state dict"
        else:
            state_dict, name = read_lora_file(source, weight_name), str(source)
        models = self._lora_models()
        if adapter_name is None:
            adapter_name = f"default_{len(self.get_list_adapters_names())}"
        loaded = load_lora_into_models(state_dict, models, adapter_name, name)
        for component, modules in loaded.items():  # the new adapter is the active one, as in diffusers
            if modules:
                lora.set_adapters(models[component], [adapter_name])

    def get_list_adapters_names(self) -> list[str]:
        """Every adapter loaded on the UNet or the text encoder."""
        names = {}
        for model in self._lora_models().values():
            names.update(dict.fromkeys(lora.adapter_names(model)))
        return list(names)

    def get_list_adapters(self) -> dict[str, list[str]]:
        """{component: its adapters}, as diffusers."""
        found = {c: lora.adapter_names(m) for c, m in self._lora_models().items()}
        return {c: names for c, names in found.items() if names}

    def get_active_adapters(self) -> list[str]:
        active = {}
        for model in self._lora_models().values():
            for layer in lora.lora_layers(model).values():
                active.update(dict.fromkeys(layer.active))
        return list(active)

    def set_adapters(
        self, adapter_names: list[str] | str, adapter_weights: float | list[float] | None = None
    ) -> None:
        """Make exactly these adapters active, each with a weight (one number for all, or a list)."""
        names = _as_list(adapter_names)
        if adapter_weights is None or isinstance(adapter_weights, int | float):
            weights = [1.0 if adapter_weights is None else float(adapter_weights)] * len(names)
        elif any(isinstance(w, dict) for w in adapter_weights):
            raise NotImplementedError("per-block adapter weights (dicts) are not supported: give numbers")
        else:
            weights = list(adapter_weights)
        if missing := sorted(set(names) - set(self.get_list_adapters_names())):
            raise ValueError(f"no adapter named {missing}; loaded: {self.get_list_adapters_names()}")
        for model in self._lora_models().values():
            present = set(lora.adapter_names(model))
            pairs = [(n, w) for n, w in zip(names, weights, strict=True) if n in present]
            lora.set_adapters(model, [n for n, _ in pairs], [w for _, w in pairs])

    def disable_lora(self) -> None:
        for model in self._lora_models().values():
            lora.enable_lora(model, False)

    def enable_lora(self) -> None:
        for model in self._lora_models().values():
            lora.enable_lora(model, True)

    def delete_adapters(self, adapter_names: list[str] | str) -> None:
        for model in self._lora_models().values():
            lora.remove_lora(model, _as_list(adapter_names))

    def fuse_lora(
        self,
        components: list[str] = ["unet", "text_encoder"],  # noqa: B006 (diffusers' default)
        lora_scale: float = 1.0,
        safe_fusing: bool = False,
        adapter_names: list[str] | None = None,
        **kwargs,
    ) -> None:
        """Fold the active adapters (or `adapter_names`), times `lora_scale`, into the weights.
        `safe_fusing` refuses to fuse an adapter whose update holds NaN or inf."""
        if kwargs:
            raise TypeError(f"fuse_lora: unsupported arguments {sorted(kwargs)}")
        models = self._lora_models(components)
        if safe_fusing:
            for component, model in models.items():
                for module, layer in lora.lora_layers(model).items():
                    for name in adapter_names or layer.active:
                        if name in layer.lora_A and not torch.isfinite(layer.delta_weight(name)).all():
                            raise ValueError(f"{component}.{module}: adapter {name!r} has NaN/inf: not fused")
        for model in models.values():
            lora.fuse_lora(model, lora_scale, adapter_names)

    def unfuse_lora(self, components: list[str] = ["unet", "text_encoder"], **kwargs) -> None:  # noqa: B006
        """Restore the weights from before fuse_lora exactly; the adapters act unfused again."""
        if kwargs:
            raise TypeError(f"unfuse_lora: unsupported arguments {sorted(kwargs)}")
        for model in self._lora_models(components).values():
            lora.unfuse_lora(model)

    def unload_lora_weights(self) -> None:
        """Remove every adapter: the layers are the original objects again (fused weights stay)."""
        for model in self._lora_models().values():
            lora.remove_lora(model)
