"""minisd's CLIPVisionModel and CLIPModel against transformers' with random weights, loaded from
folders that transformers itself saved."""

import inspect

import pytest
import torch
import transformers
from conftest import relative_max_diff

from minisd.models.clip_vision import CLIPModel, CLIPVisionModel

SMALL_VISION = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)
SMALL_TEXT = dict(
    hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=49408
)
# openai/clip-vit-large-patch14's configuration (the CLIP whose text tower SD v1.x uses)
VIT_L14_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=768,
)
VIT_L14_TEXT = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768
)


def saved_reference(model: transformers.PreTrainedModel, folder) -> transformers.PreTrainedModel:
    # transformers' initialisation leaves LayerNorms at 1/0 and small weights; random LayerNorms and a
    # non-default logit_scale make the comparison see every parameter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
            elif name == "logit_scale":
                p.fill_(3.1)
    model.save_pretrained(folder)
    return model.eval()


def token_ids(batch: int, tokens: int) -> torch.Tensor:
    """SOT, random words, EOT, then EOT padding, as CLIP's tokenizer makes them."""
    ids = torch.full((batch, tokens), 49407)
    ids[:, 0] = 49406
    for i in range(batch):
        length = 2 + i * 3
        ids[i, 1 : 1 + length] = torch.randint(300, 40000, (length,))
    return ids


def check_vision(config: dict, tmp_path, batch: int = 2, atol: float = 1e-4) -> CLIPVisionModel:
    ref = saved_reference(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**config)), tmp_path)
    ours = CLIPVisionModel.from_pretrained(tmp_path)
    pixels = torch.randn(batch, 3, config["image_size"], config["image_size"])
    with torch.no_grad():
        want = ref(pixels, output_hidden_states=True)
        got = ours(pixels, output_hidden_states=True)
    grid = config["image_size"] // config["patch_size"]
    assert got.last_hidden_state.shape == (batch, grid * grid + 1, config["hidden_size"])
    assert relative_max_diff(got.last_hidden_state, want.last_hidden_state) < 1e-4
    assert relative_max_diff(got.pooler_output, want.pooler_output) < 1e-4
    assert len(got.hidden_states) == len(want.hidden_states) == config["num_hidden_layers"] + 1
    for g, w in zip(got.hidden_states, want.hidden_states, strict=True):
        assert relative_max_diff(g, w) < 1e-4
    assert ours.num_parameters() == sum(p.numel() for p in ref.parameters())
    return ours


def check_clip(text: dict, vision: dict, projection_dim: int, tmp_path, batch: int = 3):
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    ref = saved_reference(transformers.CLIPModel(config), tmp_path)
    ours = CLIPModel.from_pretrained(tmp_path)
    ids = token_ids(batch, 77)
    pixels = torch.randn(batch - 1, 3, vision["image_size"], vision["image_size"])
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=pixels, return_loss=False)
        got = ours(input_ids=ids, pixel_values=pixels)
        for name in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
            assert relative_max_diff(getattr(got, name), getattr(want, name)) < 1e-4, name
        assert got.logits_per_image.shape == (batch - 1, batch)
        torch.testing.assert_close(got[0], got.logits_per_image)
        text_feats = ours.get_text_features(ids).pooler_output
        assert relative_max_diff(text_feats, ref.get_text_features(ids).pooler_output) < 1e-4
        image_feats = ours.get_image_features(pixels).pooler_output
        assert relative_max_diff(image_feats, ref.get_image_features(pixels).pooler_output) < 1e-4
        assert image_feats.shape == (batch - 1, projection_dim)
    assert ours.num_parameters() == sum(p.numel() for p in ref.parameters())
    return ours, ref, ids, pixels


def test_small_vision_model_matches_transformers(tmp_path):
    ours = check_vision(SMALL_VISION, tmp_path)
    plain = ours(torch.randn(1, 3, 32, 32), return_dict=False)
    assert type(plain) is tuple and len(plain) == 2


def test_small_clip_model_matches_transformers(tmp_path):
    ours, ref, ids, pixels = check_clip(SMALL_TEXT, SMALL_VISION, 16, tmp_path)
    ids, pixels = ids[:2], pixels[:2]  # square batches: the loss pairs caption i with picture i
    with torch.no_grad():
        got = ours(input_ids=ids, pixel_values=pixels, return_loss=True)
        want = ref(input_ids=ids, pixel_values=pixels, return_loss=True)
        assert len(got) == 7 and got[1] is got.logits_per_image
        assert relative_max_diff(got.loss, want.loss) < 1e-5
        assert len(ours(input_ids=ids, pixel_values=pixels)) == 6


def test_vision_model_loads_transformers_keys_of_both_generations(tmp_path):
    ref = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**SMALL_VISION))
    bare = ref.state_dict()  # transformers 5: no `vision_model.` prefix
    prefixed = {f"vision_model.{k}": v for k, v in bare.items()}
    prefixed["vision_model.embeddings.position_ids"] = torch.arange(17)[None]  # older files carry it
    for state in (bare, prefixed):
        ours = CLIPVisionModel.from_config(SMALL_VISION)
        ours.load_state_dict(CLIPVisionModel.convert_state_dict(state), strict=True)


def test_wrong_inputs_and_options_are_refused():
    vision = CLIPVisionModel.from_config(SMALL_VISION)
    with pytest.raises(ValueError, match=r"pixel_values must be a tensor \[batch, 3, 32, 32\]"):
        vision(torch.randn(1, 3, 64, 64))
    with pytest.raises(NotImplementedError, match="interpolate_pos_encoding"):
        vision(torch.randn(1, 3, 32, 32), interpolate_pos_encoding=True)
    with pytest.raises(NotImplementedError, match="attention_dropout"):
        CLIPVisionModel(attention_dropout=0.1)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        CLIPVisionModel(image_size=30, patch_size=8)
    clip = CLIPModel(text_config=SMALL_TEXT, vision_config=SMALL_VISION, projection_dim=8)
    with pytest.raises(ValueError, match="vocab_size"):
        clip.get_text_features(torch.full((1, 5), 50000))


def test_attention_is_not_causal():
    """A change in the last patch reaches the class token (a causal mask would hide it)."""
    vision = CLIPVisionModel.from_config(SMALL_VISION).eval()
    pixels = torch.randn(1, 3, 32, 32)
    changed = pixels.clone()
    changed[..., 24:, 24:] += 1.0
    with torch.no_grad():
        assert (vision(pixels).pooler_output - vision(changed).pooler_output).abs().max() > 1e-3


def test_signatures_match_transformers():
    for ours, ref, names in [
        (CLIPModel, transformers.CLIPModel, ("get_text_features", "get_image_features", "forward")),
        (CLIPVisionModel, transformers.CLIPVisionModel, ("forward",)),
    ]:
        for name in names:
            want = [
                p
                for p in inspect.signature(getattr(ref, name)).parameters.values()
                if p.kind != p.VAR_KEYWORD
            ]
            got = list(inspect.signature(getattr(ours, name)).parameters.values())[: len(want)]
            assert [(p.name, p.default) for p in got] == [(p.name, p.default) for p in want], (ours, name)


@pytest.mark.slow
def test_vit_l14_vision_model_matches_transformers(tmp_path):
    ours = check_vision(VIT_L14_VISION, tmp_path, batch=1)
    assert ours.num_parameters() == 303_179_776


@pytest.mark.slow
def test_vit_l14_clip_model_matches_transformers(tmp_path):
    ours, *_ = check_clip(VIT_L14_TEXT, VIT_L14_VISION, 768, tmp_path, batch=2)
    assert ours.num_parameters() == 427_616_513
