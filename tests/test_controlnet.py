"""ControlNetModel against diffusers': same weights, same residuals, same UNet output."""

import inspect

import diffusers
import pytest
import torch
from conftest import relative_max_diff
from tiny_sd import TINY_UNET, randomize

from minisd import UNet2DConditionModel
from minisd.models.controlnet import ControlNetModel

EMBEDDING = (8, 8, 16, 32)  # a small condition embedding (v1.5's is 16, 32, 96, 256)


@pytest.fixture(scope="module")
def base():
    """(diffusers UNet, diffusers ControlNet) with random weights, zero convolutions included."""
    torch.manual_seed(0)
    unet = randomize(diffusers.UNet2DConditionModel.from_config(TINY_UNET), 0.05).eval()
    controlnet = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=EMBEDDING)
    return unet, randomize(controlnet, 0.05).eval()


def variant(controlnet, **options):
    """The same weights in a diffusers ControlNet with other config options."""
    other = diffusers.ControlNetModel.from_config({**controlnet.config, **options}).eval()
    other.load_state_dict(controlnet.state_dict())
    return other


def ours_from(reference, cls):
    model = cls.from_config(dict(reference.config)).eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    return model


def inputs(batch=2):
    return (
        torch.randn(batch, 4, 8, 8),
        torch.tensor([10, 500][:batch]),
        torch.randn(batch, 77, 32),
        torch.rand(batch, 3, 64, 64),
    )


@pytest.mark.parametrize(
    "options,call",
    [
        ({}, dict(conditioning_scale=1.0)),
        ({}, dict(conditioning_scale=0.7, guess_mode=True)),
        ({"controlnet_conditioning_channel_order": "bgr"}, dict(conditioning_scale=0.5)),
        ({"global_pool_conditions": True}, dict(conditioning_scale=1.0)),
    ],
    ids=["plain", "guess_mode", "bgr", "global_pool"],
)
def test_controlnet_and_unet_with_residuals_match_diffusers(base, options, call):
    ref_unet, ref = base[0], variant(base[1], **options)
    ours, unet = ours_from(ref, ControlNetModel), ours_from(ref_unet, UNet2DConditionModel)
    sample, t, text, cond = inputs()
    with torch.no_grad():
        got = ours(sample, t, text, cond, **call)
        want = ref(sample, t, text, cond, **call, return_dict=False)
        assert len(got.down_block_res_samples) == len(want[0]) == 12
        for g, w in zip(got.down_block_res_samples, want[0], strict=True):
            assert g.shape == w.shape and relative_max_diff(g, w) < 1e-4
        assert relative_max_diff(got.mid_block_res_sample, want[1]) < 1e-4
        residuals = dict(down_block_additional_residuals=got[0], mid_block_additional_residual=got[1])
        out = unet(sample, t, text, **residuals).sample
        ref_out = ref_unet(
            sample, t, text, down_block_additional_residuals=want[0], mid_block_additional_residual=want[1]
        ).sample
        plain = unet(sample, t, text).sample
    assert relative_max_diff(out, ref_out) < 1e-4
    assert (out - plain).abs().max() > 1e-3  # the residuals changed the prediction


def test_from_unet_copies_the_encoder_and_leaves_the_unet_bit_identical(base):
    ref_unet = base[0]
    unet = ours_from(ref_unet, UNet2DConditionModel)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=EMBEDDING).eval()
    ref = diffusers.ControlNetModel.from_unet(ref_unet, conditioning_embedding_out_channels=EMBEDDING)
    assert dict(controlnet.config) == {k: v for k, v in ref.config.items() if not k.startswith("_")}
    ours_state, ref_state = controlnet.state_dict(), ref.state_dict()
    assert ours_state.keys() == ref_state.keys()
    for key, value in ref_state.items():  # the copied encoder and the zero convolutions
        if not key.startswith("controlnet_cond_embedding.") or key.startswith(
            "controlnet_cond_embedding.conv_out"
        ):
            assert torch.equal(ours_state[key], value), key
    zero = [k for k in ours_state if k.startswith(("controlnet_down_blocks", "controlnet_mid_block"))]
    assert len(zero) == 26 and all(not ours_state[k].any() for k in zero)
    sample, t, text, cond = inputs()
    with torch.no_grad():
        down, mid = controlnet(sample, t, text, cond, return_dict=False)
        with_control = unet(
            sample, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid
        )
        assert torch.equal(with_control.sample, unet(sample, t, text).sample)


def test_save_and_from_pretrained_round_trip_in_diffusers_layout(base, tmp_path):
    ref = base[1]
    ref.save_pretrained(tmp_path / "diffusers")
    ours = ControlNetModel.from_pretrained(tmp_path / "diffusers").eval()
    ours.save_pretrained(tmp_path / "minisd")
    back = diffusers.ControlNetModel.from_pretrained(tmp_path / "minisd").eval()
    sample, t, text, cond = inputs(1)
    with torch.no_grad():
        got, want = ours(sample, t, text, cond)[1], back(sample, t, text, cond, return_dict=False)[1]
    assert relative_max_diff(got, want) < 1e-4 and ours.config["conditioning_embedding_out_channels"] == [
        8, 8, 16, 32
    ]  # fmt: skip


def test_bad_inputs_and_unimplemented_options_are_named():
    controlnet = ControlNetModel.from_config(
        {**TINY_UNET, "conditioning_embedding_out_channels": EMBEDDING}
    ).eval()
    sample, t, text, cond = inputs(1)
    with pytest.raises(ValueError, match=r"controlnet_cond has shape \(1, 1, 64, 64\).*\[B, 3, 64, 64\]"):
        controlnet(sample, t, text, cond[:, :1])
    with pytest.raises(ValueError, match=r"expected \[B, 3, 64, 64\]"):
        controlnet(sample, t, text, cond[:, :, :32, :32])
    with pytest.raises(NotImplementedError, match="ControlNetModel: .*upcast_attention=True"):
        ControlNetModel.from_config(TINY_UNET, upcast_attention=True)
    with pytest.raises(NotImplementedError, match="class_labels"):
        controlnet(sample, t, text, cond, class_labels=torch.zeros(1))
    with pytest.raises(ValueError, match="controlnet_conditioning_channel_order"):
        ControlNetModel.from_config(TINY_UNET, controlnet_conditioning_channel_order="gbr")


@pytest.mark.parametrize(
    "ours,reference",
    [
        (ControlNetModel.__init__, diffusers.ControlNetModel.__init__),
        (ControlNetModel.forward, diffusers.ControlNetModel.forward),
        (ControlNetModel.from_unet, diffusers.ControlNetModel.from_unet),
    ],
    ids=["init", "forward", "from_unet"],
)
def test_signatures_start_with_diffusers(ours, reference):
    def params(fn):
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values() if p.name != "self"]

    want = params(reference)
    assert params(ours)[: len(want)] == want


@pytest.mark.slow
def test_full_size_controlnet_matches_diffusers():
    from minisd.loading import sd15_config

    config = sd15_config("unet")
    ref = randomize(diffusers.ControlNetModel.from_config(config), 0.02).eval()
    ours = ours_from(ref, ControlNetModel)
    assert ours.num_parameters() == ref.num_parameters()
    sample, text, cond = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 768), torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        got = ours(sample, 981, text, cond)
        want = ref(sample, 981, text, cond, return_dict=False)
    for g, w in zip([*got[0], got[1]], [*want[0], want[1]], strict=True):
        assert relative_max_diff(g, w) < 1e-4
