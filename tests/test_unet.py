"""UNet2DConditionModel against diffusers with random weights: small configs, full v1.5, loading."""

import json

import pytest
import torch
from conftest import relative_max_diff
from diffusers import UNet2DConditionModel as RefUNet

from minisd.loading import sd15_config
from minisd.models.unet import UNet2DConditionModel

SD15 = sd15_config("unet")

# v1.5's block structure at toy widths: 3 cross-attention down blocks + DownBlock2D, 8 heads
SMALL = dict(
    SD15, block_out_channels=[32, 64, 64, 64], norm_num_groups=8, cross_attention_dim=48, sample_size=16
)
# SD 2.x style: Linear proj_in/proj_out, a head count per block, 1024-wide text
SD2_SMALL = dict(SMALL, use_linear_projection=True, attention_head_dim=[2, 4, 4, 8], cross_attention_dim=1024)


def build_pair(config: dict) -> tuple[UNet2DConditionModel, RefUNet]:
    ref = RefUNet.from_config(config).eval()
    with torch.device("meta"):
        ours = UNet2DConditionModel.from_config(config)
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)  # shares the tensors
    return ours.eval(), ref


def run_both(ours, ref, sample, timestep, text):
    with torch.no_grad():
        return ours(sample, timestep, text).sample, ref(sample, timestep, text).sample


@pytest.mark.parametrize("config", [SMALL, SD2_SMALL], ids=["v1.5-structure", "sd2-structure"])
def test_small_unet_matches_diffusers(config):
    ours, ref = build_pair(config)
    assert ours.num_parameters() == sum(p.numel() for p in ref.parameters())
    sample, text = torch.randn(2, 4, 16, 24), torch.randn(2, 77, config["cross_attention_dim"])
    for timestep in (torch.tensor([1, 981]), torch.tensor(500), 37):
        got, want = run_both(ours, ref, sample, timestep, text)
        assert got.shape == (2, 4, 16, 24)
        assert relative_max_diff(got, want) < 1e-4


def test_encoder_attention_mask_matches_diffusers():
    """Hiding text tokens from the cross-attention (chapter 07's tiny model hides the padding)."""
    ours, ref = build_pair(SMALL)
    sample, text = torch.randn(3, 4, 16, 16), torch.randn(3, 77, 48)
    mask = torch.arange(77) < torch.tensor([[4], [11], [77]])  # [3, 77]: 4, 11 and all tokens
    with torch.no_grad():
        got = ours(sample, 300, text, encoder_attention_mask=mask).sample
        want = ref(sample, 300, text, encoder_attention_mask=mask.float()).sample
        assert relative_max_diff(got, want) < 1e-4
        # a hidden token has no effect: the output is that of the text cut to the visible tokens
        assert relative_max_diff(got[1:2], ours(sample[1:2], 300, text[1:2, :11]).sample) < 1e-5
        assert relative_max_diff(got[2:], ours(sample[2:], 300, text[2:]).sample) < 1e-5
        assert relative_max_diff(got[:1], ours(sample[:1], 300, text[:1]).sample) > 1e-3
    with pytest.raises(ValueError, match=r"encoder_attention_mask has shape \(3, 76\)"):
        ours(sample, 300, text, encoder_attention_mask=mask[:, 1:])


def test_timestep_changes_the_output():
    ours, _ = build_pair(SMALL)
    sample, text = torch.randn(1, 4, 8, 8), torch.randn(1, 5, 48)
    with torch.no_grad():
        assert relative_max_diff(ours(sample, 1, text).sample, ours(sample, 900, text).sample) > 1e-3


def test_from_pretrained_loads_a_diffusers_folder(tmp_path):
    ref = RefUNet.from_config(SMALL).eval()
    ref.save_pretrained(tmp_path)
    ours = UNet2DConditionModel.from_pretrained(tmp_path)
    assert ours.config["block_out_channels"] == [32, 64, 64, 64]
    got, want = run_both(ours, ref, torch.randn(1, 4, 8, 8), 250, torch.randn(1, 77, 48))
    assert relative_max_diff(got, want) < 1e-4


def test_from_pretrained_rejects_another_architecture(tmp_path):
    RefUNet.from_config(SMALL).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, use_linear_projection=True)))
    with pytest.raises(ValueError, match="shape mismatches.*proj_in"):
        UNet2DConditionModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.03), (torch.float16, 0.02)])
def test_half_precision_stays_close_to_fp32(dtype, tol):
    ours, _ = build_pair(SMALL)
    sample, text = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 48)
    with torch.no_grad():
        full = ours(sample, 500, text).sample
        half = ours.to(dtype)(sample.to(dtype), 500, text.to(dtype)).sample
    assert half.dtype == dtype
    assert relative_max_diff(half, full) < tol


@pytest.mark.parametrize(
    "sample_shape,text_shape,timestep,match",
    [
        ((1, 4, 12, 16), (1, 77, 48), 1, r"latent size \(12, 16\) is not divisible by 8"),
        ((1, 3, 16, 16), (1, 77, 48), 1, r"expected latents \[B, 4, H, W\]"),
        ((4, 16, 16), (1, 77, 48), 1, r"expected latents \[B, 4, H, W\]"),
        ((1, 4, 16, 16), (1, 77, 768), 1, r"expected \[B, L, cross_attention_dim\] = \[1, L, 48\]"),
        ((2, 4, 16, 16), (1, 77, 48), 1, r"\[2, L, 48\]"),
        ((2, 4, 16, 16), (2, 77, 48), torch.tensor([1, 2, 3]), r"timestep has shape \(3,\)"),
    ],
)
def test_bad_inputs_name_the_problem(sample_shape, text_shape, timestep, match):
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(SMALL)
    with pytest.raises(ValueError, match=match):
        unet(torch.zeros(sample_shape), timestep, torch.zeros(text_shape))


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(down_block_types=["CrossAttnDownBlock2D"] * 3 + ["AttnDownBlock2D"]), "unsupported block type"),
        (dict(attention_head_dim=[8, 8]), "one entry per block"),
        (dict(act_fn="gelu"), "'silu' only"),
        (dict(up_block_types=["UpBlock2D"] * 3), "same length"),
    ],
)
def test_bad_configs_name_the_problem(overrides, match):
    with pytest.raises(ValueError, match=match), torch.device("meta"):
        UNet2DConditionModel.from_config(SMALL, **overrides)


@pytest.mark.parametrize(
    "overrides",
    [dict(class_embed_type="timestep"), dict(upcast_attention=True), dict(transformer_layers_per_block=2)],
)
def test_unimplemented_diffusers_options_are_refused_by_name(overrides):
    (name,) = overrides
    with pytest.raises(NotImplementedError, match=rf"{name}="), torch.device("meta"):
        UNet2DConditionModel.from_config(SMALL, **overrides)


def test_output_conventions_and_refused_forward_arguments():
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(SMALL).eval()
    sample, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 48)
    with torch.no_grad():
        out = unet(sample, 10, text)
        plain = unet(sample, 10, text, return_dict=False)
    assert out[0] is out.sample and type(plain) is tuple and torch.equal(plain[0], out.sample)
    with pytest.raises(NotImplementedError, match="down_intrablock_additional_residuals"):
        unet(sample, 10, text, down_intrablock_additional_residuals=(torch.zeros(1, 64, 1, 1),))
    with pytest.raises(ValueError, match="together"):
        unet(sample, 10, text, mid_block_additional_residual=torch.zeros(1, 64, 1, 1))


@pytest.mark.slow
def test_full_v15_unet_matches_diffusers():
    ours, ref = build_pair(SD15)
    assert ours.num_parameters() == 859_520_964
    got, want = run_both(ours, ref, torch.randn(1, 4, 8, 8), 981, torch.randn(1, 77, 768))
    assert relative_max_diff(got, want) < 1e-4


@pytest.mark.parametrize("masked", [False, True], ids=["all-tokens", "padding-masked"])
def test_cross_attention_maps_match_diffusers_attention_probabilities(masked):
    """The maps chapters 04 and 07 draw: diffusers' own softmax weights, recorded by a processor."""
    from diffusers.models.attention_processor import AttnProcessor

    from minisd.models.attention_maps import cross_attention_maps

    recorded = []

    class Recorder(AttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
            if encoder_hidden_states is not None and hidden_states.shape[1] == 8 * 8:
                b, n = hidden_states.shape[:2]
                bias = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], b)
                q = attn.head_to_batch_dim(attn.to_q(hidden_states))  # [B*h, HW, d]
                k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
                probs = attn.get_attention_scores(q, k, bias)  # [B*h, HW, L]
                recorded.append(probs.unflatten(0, (b, attn.heads)).mean(1))
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)

    ours, ref = build_pair(SMALL)
    ref.set_attn_processor(Recorder())
    sample, text = torch.randn(2, 4, 16, 16), torch.randn(2, 77, SMALL["cross_attention_dim"])
    mask = (torch.arange(77) < torch.tensor([[5], [9]])) if masked else None  # [2, 77]
    with torch.no_grad():
        ref(sample, 500, text, encoder_attention_mask=mask)
    maps = cross_attention_maps(ours, sample, 500, text, side=8, encoder_attention_mask=mask)  # [2, 8, 8, 77]
    want = torch.stack(recorded).mean(0).unflatten(1, (8, 8))
    assert maps.shape == (2, 8, 8, 77) and len(recorded) == 5  # down_blocks.1 (2), up_blocks.2 (3)
    torch.testing.assert_close(maps, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 8, 8))
    if masked:
        assert maps[0, ..., 5:].max() == 0 and maps[1, ..., 9:].max() == 0 and maps[1, ..., 8].min() > 0
    with pytest.raises(ValueError, match="5x5 grid"):
        cross_attention_maps(ours, sample, 500, text, side=5)
