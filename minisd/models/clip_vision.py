"""CLIP's image tower and the two-tower CLIPModel.

A vision transformer cuts a [B, 3, 224, 224] picture into 16x16 = 256 patches of 14x14 pixels
(ViT-L/14), embeds each with one strided convolution, puts a learned class token in front and adds a
learned position embedding to each of the 257 tokens. After a LayerNorm (`pre_layrnorm`, as
transformers spells it) the same encoder layers as the text tower run, without a causal mask: every
patch sees every patch. The class token's output, after `post_layernorm`, is the picture's summary.
`CLIPModel` projects both summaries into one space (768 -> 768 for ViT-L/14) where the cosine of an
image and a caption, scaled by exp(`logit_scale`), is their match score. Attribute names equal
transformers' keys, so an official `model.safetensors` loads with strict checking.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minisd.models.clip import ACTIVATIONS, BaseModelOutputWithPooling, CLIPEncoder, CLIPTextModel
from minisd.models.modeling_utils import ModelMixin, reject_unsupported


class CLIPVisionEmbeddings(nn.Module):
    """Patches -> tokens: a class token, then one token per patch, each plus its position embedding."""

    def __init__(self, hidden_size: int, image_size: int, patch_size: int, num_channels: int):
        super().__init__()
        self.image_size = image_size
        self.class_embedding = nn.Parameter(torch.randn(hidden_size))
        self.patch_embedding = nn.Conv2d(num_channels, hidden_size, patch_size, stride=patch_size, bias=False)
        self.position_embedding = nn.Embedding((image_size // patch_size) ** 2 + 1, hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # [B, D, g, g]
        patches = patches.flatten(2).transpose(1, 2)  # [B, g*g, D], row by row
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)  # [B, 1, D]
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight  # [B, 1 + g*g, D]


class CLIPVisionTransformer(nn.Module):
    """Embeddings -> pre_layrnorm -> encoder layers (not causal); `pool` gives the picture's vector."""

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        num_attention_heads: int,
        num_hidden_layers: int,
        image_size: int,
        patch_size: int,
        num_channels: int,
        layer_norm_eps: float,
        hidden_act: str,
    ):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(hidden_size, image_size, patch_size, num_channels)
        self.pre_layrnorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.encoder = CLIPEncoder(
            num_hidden_layers,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_attention_heads=num_attention_heads,
            hidden_act=hidden_act,
            eps=layer_norm_eps,
        )
        self.post_layernorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's input (after pre_layrnorm) and each layer's output: [B, 1 + patches, D] each."""
        states = [self.pre_layrnorm(self.embeddings(pixel_values))]
        # The text tower's layers are causal unless given a mask; an all-True one lets every token see all.
        everything = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=pixel_values.device)
        for layer in self.encoder.layers:
            states.append(layer(states[-1], everything))
        return states

    def pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """The class token's output after post_layernorm: [B, N, D] -> [B, D]."""
        return self.post_layernorm(last_hidden_state[:, 0])

    def check_input(self, pixel_values: torch.Tensor | None, interpolate_pos_encoding: bool | None) -> None:
        if interpolate_pos_encoding:
            raise NotImplementedError(
                "interpolate_pos_encoding=True: minisd's CLIP takes pictures of its own image_size only"
            )
        emb = self.embeddings
        shape = (emb.patch_embedding.in_channels, emb.image_size, emb.image_size)
        if pixel_values is None or pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != shape:
            got = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(
                f"pixel_values must be a tensor [batch, {', '.join(map(str, shape))}], got {got}; "
                "resize and normalise pictures as the model's image processor does"
            )


class CLIPVisionModel(ModelMixin):
    """CLIP's image tower: `model(pixel_values [B, 3, S, S]).pooler_output` -> [B, hidden_size].

    Constructor keys and defaults are transformers' `CLIPVisionConfig` (ViT-B/32: 768 wide, 12
    layers, 224 pixels in patches of 32). As in transformers, `last_hidden_state` is the last layer's
    output without `post_layernorm`, which only the pooled class token goes through.
    `projection_dim` belongs to `CLIPModel` and does not change this model.
    """

    weights_name = "model"

    def __init__(
        self,
        hidden_size: int = 768,
        intermediate_size: int = 3072,
        projection_dim: int = 512,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        num_channels: int = 3,
        image_size: int = 224,
        patch_size: int = 32,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        initializer_factor: float = 1.0,
    ):
        super().__init__()
        if hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {hidden_act!r} is not supported; use one of {sorted(ACTIVATIONS)}")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
            )
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        reject_unsupported(
            "CLIPVisionModel",
            dict(
                attention_dropout=(attention_dropout, 0.0),
                initializer_range=(initializer_range, 0.02),
                initializer_factor=(initializer_factor, 1.0),
            ),
        )
        self.vision_model = CLIPVisionTransformer(
            hidden_size,
            intermediate_size,
            num_attention_heads,
            num_hidden_layers,
            image_size,
            patch_size,
            num_channels,
            layer_norm_eps,
            hidden_act,
        )

    @classmethod
    def convert_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept transformers-5 keys (no `vision_model.` prefix) and drop the `position_ids` buffer."""
        bare = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")
        return {
            (f"vision_model.{k}" if k.startswith(bare) else k): v
            for k, v in state_dict.items()
            if not k.endswith("position_ids")
        }

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """Pictures [B, C, S, S] (normalised as CLIP's processor does) -> (last_hidden_state, pooler_output).

        last_hidden_state: [B, 1 + patches, D]; pooler_output: [B, D]. `output_hidden_states=True`
        adds the encoder's input and each layer's output; `return_dict=False` gives a plain tuple.
        """
        if output_attentions:
            raise NotImplementedError(
                "output_attentions=True: minisd's attention does not return its weights"
            )
        self.vision_model.check_input(pixel_values, interpolate_pos_encoding)
        states = self.vision_model(pixel_values)  # [B, N, D] each
        out = BaseModelOutputWithPooling(
            states[-1], self.vision_model.pool(states[-1]), tuple(states) if output_hidden_states else None
        )
        return out if return_dict is not False else tuple(out)


class CLIPOutput(tuple):
    """transformers' output of `CLIPModel`, read by name or by index.

    (loss, logits_per_image [B_img, B_txt], logits_per_text [B_txt, B_img], text_embeds, image_embeds
    (both unit length), text_model_output, vision_model_output); `loss` is left out when it was not
    asked for, as transformers leaves out the fields it did not compute, so [0] is logits_per_image.
    """

    FIELDS = (
        "loss",
        "logits_per_image",
        "logits_per_text",
        "text_embeds",
        "image_embeds",
        "text_model_output",
        "vision_model_output",
    )

    def __new__(cls, loss: torch.Tensor | None, *rest):
        return super().__new__(cls, rest if loss is None else (loss, *rest))

    def __getattr__(self, name: str):
        if name not in self.FIELDS:
            raise AttributeError(name)
        fields = self.FIELDS if len(self) == len(self.FIELDS) else self.FIELDS[1:]
        return self[fields.index(name)] if name in fields else None


def contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: cross-entropy of each caption over the pictures and each picture over the
    captions, where the i-th caption belongs to the i-th picture (the diagonal)."""
    target = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, target) + F.cross_entropy(logits_per_text.T, target)) / 2


class CLIPModel(ModelMixin):
    """Text and image towers with projections into one space and a learned temperature.

    Constructor keys are transformers' `CLIPConfig`: `text_config` / `vision_config` (dicts of
    `CLIPTextModel` / `CLIPVisionModel` keys; None keeps those classes' defaults), `projection_dim`,
    `logit_scale_init_value` (log of 1 / 0.07, CLIP's initial temperature). As in transformers 5,
    `get_text_features` / `get_image_features` return `BaseModelOutputWithPooling` whose
    `pooler_output` ([1]) is the projected feature vector [B, projection_dim].
    """

    weights_name = "model"
    # The text side is CLIPTextModel's (they read only `text_model` and `eos_token_id`).
    _check_text = CLIPTextModel._check_input
    _pool_text = CLIPTextModel.pool

    def __init__(
        self,
        text_config: dict | None = None,
        vision_config: dict | None = None,
        projection_dim: int = 512,
        logit_scale_init_value: float = 2.6592,
        initializer_factor: float = 1.0,
    ):
        super().__init__()
        reject_unsupported("CLIPModel", dict(initializer_factor=(initializer_factor, 1.0)))
        text = CLIPTextModel.from_config(text_config or {})
        vision = CLIPVisionModel.from_config(vision_config or {})
        self.eos_token_id = text.eos_token_id
        self.text_model = text.text_model
        self.vision_model = vision.vision_model
        self.visual_projection = nn.Linear(vision.config.hidden_size, projection_dim, bias=False)
        self.text_projection = nn.Linear(text.config.hidden_size, projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init_value)))

    @classmethod
    def convert_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop the `position_ids` buffers that older transformers files carry."""
        return {k: v for k, v in state_dict.items() if not k.endswith("position_ids")}

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPooling:
        """Token ids [B, N] -> (last_hidden_state [B, N, D], projected EOT state [B, projection_dim])."""
        self._check_text(input_ids)
        states = self.text_model(input_ids, attention_mask, position_ids)
        last = self.text_model.final_layer_norm(states[-1])  # [B, N, D]
        return BaseModelOutputWithPooling(last, self.text_projection(self._pool_text(last, input_ids)))

    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> BaseModelOutputWithPooling:
        """Pictures [B, C, S, S] -> (last_hidden_state, projected class token [B, projection_dim])."""
        self.vision_model.check_input(pixel_values, interpolate_pos_encoding)
        last = self.vision_model(pixel_values)[-1]  # [B, N, D]
        return BaseModelOutputWithPooling(last, self.visual_projection(self.vision_model.pool(last)))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> CLIPOutput | tuple:
        """Captions and pictures -> their match logits: exp(logit_scale) * cosine, both ways.

        `return_loss=True` adds the symmetric contrastive loss (caption i belongs to picture i).
        """
        if input_ids is None:
            raise ValueError("input_ids is required: the captions' token ids [batch, tokens]")
        vision = self.get_image_features(pixel_values, interpolate_pos_encoding)
        text = self.get_text_features(input_ids, attention_mask, position_ids)
        image_embeds = F.normalize(vision.pooler_output, dim=-1)  # [B_img, P]
        text_embeds = F.normalize(text.pooler_output, dim=-1)  # [B_txt, P]
        logits_per_text = self.logit_scale.exp() * text_embeds @ image_embeds.T  # [B_txt, B_img]
        loss = contrastive_loss(logits_per_text) if return_loss else None
        out = CLIPOutput(loss, logits_per_text.T, logits_per_text, text_embeds, image_embeds, text, vision)
        return out if return_dict is not False else tuple(out)
