"""minisd.loading: the original single-file layout <-> diffusers layout, checked against diffusers'
own single-file loader and conversion functions on random-weight models."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from tiny_sd import SD15, TINY_UNET, TINY_VAE, diffusers_components, save_diffusers_pipeline

from minisd import convert
from minisd import loading as ck
from minisd.__main__ import main
from minisd.loading import CheckpointError


def assert_same(a: dict, b: dict):
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:8]
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def models():
    return diffusers_components()  # every tensor random, so a swapped key shows


@pytest.fixture(scope="module")
def original(models):
    unet, vae, text = models
    parts = {"unet": unet.state_dict(), "vae": vae.state_dict(), "text_encoder": text.state_dict()}
    return ck.diffusers_to_original(parts, TINY_UNET, TINY_VAE)


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    return save_diffusers_pipeline(tmp_path_factory.mktemp("tiny") / "sd")


# ---------------------------------------------------------------------------- key maps vs diffusers


def test_unet_map_matches_diffusers(models, original):
    unet = models[0].state_dict()
    assert_same(convert_ldm_unet_checkpoint(original, TINY_UNET), unet)
    assert_same(ck.original_to_diffusers(original, TINY_UNET, TINY_VAE)["unet"], unet)


def test_vae_map_matches_diffusers(models, original):
    vae = models[1].state_dict()
    assert original["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv in the original
    assert_same(convert_ldm_vae_checkpoint(original, TINY_VAE), vae)
    assert_same(ck.original_to_diffusers(original, TINY_UNET, TINY_VAE)["vae"], vae)


def test_text_encoder_map_matches_diffusers(models, original):
    text = {
        f"text_model.{k}": v for k, v in models[2].state_dict().items()
    }  # transformers 5 drops the prefix
    assert_same(convert_ldm_clip_checkpoint(original), text)
    assert_same(ck.original_to_diffusers(original, TINY_UNET, TINY_VAE)["text_encoder"], text)


def test_full_size_key_maps_on_meta():
    """The v1.5 configuration: every key maps, both ways, exactly as diffusers maps it (no weights)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(SD15["unet"]).state_dict()
        vae = AutoencoderKL.from_config(SD15["vae"]).state_dict()
    orig_unet = {ck.UNET_PREFIX + k: v for k, v in ck.unet_to_original(unet, SD15["unet"]).items()}
    assert (
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in orig_unet
    )  # diffusers' v1 marker
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in orig_unet  # UpBlock2D upsampler
    assert "model.diffusion_model.output_blocks.5.2.conv.weight" in orig_unet  # after an attention
    ref = convert_ldm_unet_checkpoint(orig_unet, SD15["unet"])
    assert set(ref) == set(unet) and all(ref[k] is unet[k] for k in unet)  # the very same tensors
    orig_vae = {ck.VAE_PREFIX + k: v for k, v in ck.vae_to_original(vae, SD15["vae"]).items()}
    ref = convert_ldm_vae_checkpoint(orig_vae, SD15["vae"])
    assert set(ref) == set(vae) and all(ref[k].shape == vae[k].shape for k in vae)
    assert len(orig_unet) == len(unet) == 686 and len(orig_vae) == len(vae) == 248


def test_single_file_loads_in_diffusers(pipeline_folder, tmp_path):
    """A file we write from a diffusers folder is read by diffusers' own from_single_file."""
    path = tmp_path / "sd.safetensors"
    convert.folder_to_single_file(pipeline_folder, path)
    ref = StableDiffusionPipeline.from_pretrained(pipeline_folder)
    got = StableDiffusionPipeline.from_single_file(
        str(path), config=str(pipeline_folder), local_files_only=True, safety_checker=None
    )
    for name in ("unet", "vae", "text_encoder"):
        assert_same(getattr(got, name).state_dict(), getattr(ref, name).state_dict())


# ---------------------------------------------------------------------------- EMA


def with_ema(original: dict) -> dict:
    ema = {ck.ema_key(k): v + 1 for k, v in original.items() if k.startswith(ck.UNET_PREFIX)}
    return {
        **original,
        **ema,
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(7),
    }


def test_ema_weights_are_used_when_present(original):
    full = with_ema(original)
    assert "model_ema.diffusion_modelinput_blocks00weight" in full
    ema = ck.original_to_diffusers(full, TINY_UNET, TINY_VAE)["unet"]
    assert_same(ema, convert_ldm_unet_checkpoint(full, TINY_UNET, extract_ema=True))
    raw = ck.original_to_diffusers(full, TINY_UNET, TINY_VAE, use_ema=False)["unet"]
    assert_same(raw, convert_ldm_unet_checkpoint(full, TINY_UNET, extract_ema=False))
    assert not torch.equal(ema["conv_in.weight"], raw["conv_in.weight"])


def test_use_ema_without_ema_weights_is_an_error(original):
    with pytest.raises(CheckpointError, match="no EMA weights"):
        ck.original_to_diffusers(original, TINY_UNET, TINY_VAE, use_ema=True)


# ---------------------------------------------------------------------------- files and round trips


def test_ckpt_and_safetensors_round_trip(original, tmp_path):
    for name in ("a.safetensors", "a.ckpt"):
        ck.save_checkpoint(original, tmp_path / name)
        assert_same(ck.load_checkpoint(tmp_path / name), original)
    torch.save({"state_dict": {"state_dict": original}, "global_step": 5}, tmp_path / "nested.ckpt")
    assert_same(ck.load_checkpoint(tmp_path / "nested.ckpt"), original)


def test_folder_file_folder_round_trip(pipeline_folder, tmp_path):
    convert.folder_to_single_file(pipeline_folder, tmp_path / "sd.ckpt")
    convert.single_file_to_folder(tmp_path / "sd.ckpt", tmp_path / "back", config=pipeline_folder)
    ref = StableDiffusionPipeline.from_pretrained(pipeline_folder)
    got = StableDiffusionPipeline.from_pretrained(tmp_path / "back")  # diffusers reads what we wrote
    for name in ("unet", "vae", "text_encoder"):
        assert_same(getattr(got, name).state_dict(), getattr(ref, name).state_dict())
    assert got.tokenizer("a cat,").input_ids == ref.tokenizer("a cat,").input_ids


def test_convert_cli_both_directions(pipeline_folder, tmp_path, capsys):
    main(["convert", str(pipeline_folder), str(tmp_path / "sd.safetensors")])
    main(
        [
            "convert",
            str(tmp_path / "sd.safetensors"),
            str(tmp_path / "back"),
            "--config",
            str(pipeline_folder),
        ]
    )
    for name in ("unet", "vae"):
        a = ck.load_checkpoint(pipeline_folder / name / "diffusion_pytorch_model.safetensors")
        assert_same(ck.load_checkpoint(tmp_path / "back" / name / "diffusion_pytorch_model.safetensors"), a)
    assert json.loads((tmp_path / "back" / "unet" / "config.json").read_text())["block_out_channels"] == [
        32,
        32,
        64,
        64,
    ]
    assert "wrote" in capsys.readouterr().out


# ---------------------------------------------------------------------------- bad inputs


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        ck.load_checkpoint("/nonexistent/sd.safetensors")


@pytest.mark.parametrize("name", ["sd.safetensors", "sd.ckpt"])
def test_truncated_file_names_the_file(original, tmp_path, name):
    path = tmp_path / name
    ck.save_checkpoint(original, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{name}.*(truncated|corrupt)"):
        ck.load_checkpoint(path)


def test_pickled_code_is_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": ck.CheckpointError("x")}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="evil.ckpt holds pickled Python objects"):
        ck.load_checkpoint(tmp_path / "evil.ckpt")


def test_unknown_suffix(tmp_path):
    (tmp_path / "sd.zip").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        ck.load_checkpoint(tmp_path / "sd.zip")


@pytest.mark.parametrize(
    "keys, match",
    [
        (["conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight"], "SDXL"),
        (
            [
                "model.diffusion_model.input_blocks.0.0.weight",
                "cond_stage_model.model.token_embedding.weight",
            ],
            "SD 2.x",
        ),
        (["down_blocks.0.resnets.0.conv1.weight"], "diffusers names"),
        (["foo.weight"], "not a Stable Diffusion checkpoint"),
        (["model.diffusion_model.input_blocks.0.0.weight"], "no first_stage_model"),
    ],
)
def test_other_architectures_are_named(keys, match):
    with pytest.raises(CheckpointError, match=match):
        ck.original_to_diffusers({k: torch.zeros(1) for k in keys}, TINY_UNET, TINY_VAE, name="x.safetensors")


def test_wrong_config_is_reported(original):
    small = {**TINY_UNET, "layers_per_block": 1}
    with pytest.raises(CheckpointError, match="fit no block of the config"):
        ck.original_to_diffusers(original, small, TINY_VAE)
