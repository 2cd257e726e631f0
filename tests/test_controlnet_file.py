"""The original ControlNet single-file layout: minisd's key map against diffusers' own conversion, and
one random original-layout file loaded by minisd and by diffusers' from_single_file with equal outputs."""

import diffusers
import pytest
import torch
from conftest import relative_max_diff
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from tiny_sd import TINY_UNET, randomize

from minisd.loading import CheckpointError, save_checkpoint
from minisd.loading.controlnet_file import controlnet_from_original, controlnet_to_original
from minisd.models.controlnet import ControlNetModel

CONFIG = {**TINY_UNET, "conditioning_embedding_out_channels": [8, 8, 16, 32]}


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return randomize(diffusers.ControlNetModel.from_config(CONFIG), 0.05).eval()


def original_file(reference, path, extra=None):
    """Write the reference's weights in the original layout, as a ControlNet 1.0 file does (with a
    stray SD weight beside them), to `path`."""
    state = controlnet_to_original(reference.state_dict(), dict(reference.config))
    state["model.diffusion_model.out.2.bias"] = torch.zeros(4)
    save_checkpoint({**state, **(extra or {})}, path)
    return state


def test_key_map_agrees_with_diffusers_conversion(reference):
    config = dict(reference.config)
    original = controlnet_to_original(reference.state_dict(), config)
    assert {k.split(".")[1] for k in original} == {
        "time_embed", "input_blocks", "middle_block", "zero_convs", "middle_block_out", "input_hint_block"
    }  # fmt: skip
    assert (
        "control_model.zero_convs.11.0.weight" in original
        and "control_model.input_hint_block.14.bias" in original
    )
    theirs = convert_controlnet_checkpoint(original, config)
    ours = controlnet_from_original(original, config)
    want = reference.state_dict()
    assert theirs.keys() == ours.keys() == want.keys()
    for key, value in want.items():
        assert torch.equal(theirs[key], value) and torch.equal(ours[key], value), key


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_original_file_loads_into_minisd_and_diffusers_alike(reference, tmp_path, suffix):
    reference.save_pretrained(tmp_path / "config")
    path = tmp_path / f"control_v11p_tiny{suffix}"
    original_file(reference, path)
    ours = ControlNetModel.from_single_file(path, config=tmp_path / "config")
    theirs = diffusers.ControlNetModel.from_single_file(str(path), config=str(tmp_path / "config")).eval()
    sample, text, cond = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        got, want = ours(sample, 321, text, cond), theirs(sample, 321, text, cond, return_dict=False)
    for g, w in zip([*got[0], got[1]], [*want[0], want[1]], strict=True):
        assert relative_max_diff(g, w) < 1e-4


def test_a_controlnet_for_another_base_or_a_damaged_file_is_named(reference, tmp_path):
    state = controlnet_to_original(reference.state_dict(), dict(reference.config))
    key = next(k for k in state if k.endswith("attn2.to_k.weight"))
    sd2 = {**state, key: torch.zeros(state[key].shape[0], 1024)}
    with pytest.raises(CheckpointError, match="ControlNet for SD 2.x.*1024-wide"):
        controlnet_from_original(sd2, CONFIG, "control_v11p_sd21.pth")
    sdxl = {**state, "control_model.label_emb.0.0.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="ControlNet for SDXL"):
        controlnet_from_original(sdxl, CONFIG)
    with pytest.raises(CheckpointError, match="no ControlNet weights.*from_pretrained"):
        controlnet_from_original(reference.state_dict(), CONFIG)
    path = tmp_path / "control.pth"
    original_file(reference, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged|truncated|corrupt"):
        ControlNetModel.from_single_file(path, config=CONFIG)
