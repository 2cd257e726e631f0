"""minisd.StableDiffusionPipeline against diffusers' StableDiffusionPipeline on the same random-weight
model (saved with diffusers' save_pretrained), with injected latents or the same seeded generator."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    PNDMScheduler,
)
from diffusers import StableDiffusionPipeline as RefPipeline
from PIL import Image
from tiny_sd import SAME_WEIGHTS_ATOL, save_diffusers_pipeline, weight_digests

from minisd import convert
from minisd import loading as ck
from minisd.__main__ import main
from minisd.loading import CheckpointError
from minisd.pipelines import StableDiffusionPipeline

PROMPT = "a photograph of an astronaut riding a horse"
SIZE = 64  # pixels; latents 8x8, the smallest the tiny UNet's three downsamplings allow
REF_SCHEDULERS = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_diffusers_pipeline(tmp_path_factory.mktemp("tiny") / "sd")


def load_ref(folder):
    ref = RefPipeline.from_pretrained(folder, dtype=torch.float32).to("cpu")
    ref.saved_scheduler_config = ref.scheduler.config  # the folder's scheduler_config.json
    return ref


@pytest.fixture(scope="module")
def ref(folder):
    return load_ref(folder)


@pytest.fixture(scope="module")
def pipe(folder):
    return StableDiffusionPipeline.from_pretrained(folder, device="cpu")


def run_ref(ref, scheduler="pndm", **kwargs):
    ref.scheduler = REF_SCHEDULERS[scheduler].from_config(ref.saved_scheduler_config)  # as a user swaps it
    args = dict(num_inference_steps=2, height=SIZE, width=SIZE, output_type="np")
    return ref(**{**args, **kwargs}).images


def run_ours(pipe, scheduler="pndm", **kwargs):
    args = dict(num_inference_steps=2, height=SIZE, width=SIZE, output_type="np", progress=False)
    return pipe(scheduler=scheduler, **{**args, **kwargs}).images


def latents(batch=1, seed=1):
    return torch.randn(batch, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(seed))


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


# ---------------------------------------------------------------------------- parity with diffusers


@pytest.mark.parametrize("scheduler", ["pndm", "ddim", "dpm++2m"])
def test_images_equal_diffusers(pipe, ref, scheduler):
    x = latents()
    want = run_ref(ref, scheduler, prompt=PROMPT, latents=x, num_inference_steps=4)  # DPM++ reaches 2nd order
    got = run_ours(pipe, scheduler, prompt=PROMPT, latents=x, num_inference_steps=4)
    assert got.shape == want.shape == (1, SIZE, SIZE, 3)
    assert want.std() > 0.01  # not a flat image: the comparison means something
    assert max_diff(got, want) < 2e-3


def test_seeded_generator_matches_diffusers(pipe, ref):
    """The initial noise and Euler ancestral's per-step noise come from the same CPU generator."""
    want = run_ref(ref, "euler_a", prompt=PROMPT, generator=torch.Generator().manual_seed(42))
    got = run_ours(pipe, "euler_a", prompt=PROMPT, generator=torch.Generator().manual_seed(42))
    assert max_diff(got, want) < 2e-3


def test_batch_negative_prompts_and_images_per_prompt(pipe, ref):
    kwargs = dict(
        prompt=["a red cube", "a blue sphere"],
        negative_prompt=["blurry", "dark"],
        num_images_per_prompt=2,
        guidance_scale=5.0,
        latents=latents(4),
    )
    want = run_ref(ref, **kwargs)
    got = run_ours(pipe, **kwargs)
    assert got.shape == (4, SIZE, SIZE, 3) and max_diff(got, want) < 2e-3


def test_no_guidance(pipe, ref):
    x = latents()
    got = run_ours(pipe, prompt=PROMPT, latents=x, guidance_scale=1.0)
    assert max_diff(got, run_ref(ref, prompt=PROMPT, latents=x, guidance_scale=1.0)) < 2e-3


def test_clip_skip(pipe, ref):
    """clip_skip=1: the penultimate layer through the final LayerNorm, for the prompt only (diffusers'
    meaning). diffusers 0.42 cannot apply it to a transformers-5 text encoder itself, so the reference
    embeddings come from transformers' hidden states."""
    x = latents()
    ids = ref.tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
    hidden = ref.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    embeds = ref.text_encoder.final_layer_norm(hidden)
    want = run_ref(ref, prompt_embeds=embeds, latents=x)
    assert max_diff(run_ours(pipe, prompt=PROMPT, latents=x, clip_skip=1), want) < 2e-3
    assert max_diff(run_ours(pipe, prompt=PROMPT, latents=x), want) > 1e-3  # it changes the image


def test_prompt_embeds_and_output_types(pipe, ref):
    x = latents()
    embeds = pipe.text_encoder(pipe.tokenizer(PROMPT))[0]
    negative = pipe.text_encoder(pipe.tokenizer("ugly"))[0]
    want = run_ref(ref, prompt_embeds=embeds, negative_prompt_embeds=negative, latents=x)
    got = run_ours(pipe, prompt_embeds=embeds, negative_prompt_embeds=negative, latents=x)
    assert max_diff(got, want) < 2e-3


def test_mask_text_padding_equals_cutting_the_text(folder, pipe, tmp_path):
    """A pipeline whose model_index.json sets mask_text_padding (chapter 07's tiny model) hides the
    padding after EOT from the UNet: the images of text embeddings cut to the prompt's own tokens."""
    import json

    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (tmp_path / part).symlink_to(folder / part)
    index = json.loads((folder / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "mask_text_padding": True}))
    masked = StableDiffusionPipeline.from_pretrained(tmp_path, device="cpu")
    assert masked.mask_text_padding and not pipe.mask_text_padding

    def cut(text):  # [1, n, 48]: the embeddings of SOT ... EOT only
        with torch.inference_mode():
            return pipe.text_encoder(pipe.tokenizer(text))[0][:, : len(pipe.tokenizer.encode(text))]

    prompts, negatives = ["a red cube", "two small blue spheres"], ["a dark room", "a big green pyramid"]
    assert [len(pipe.tokenizer.encode(t)) for t in prompts + negatives] == [5, 6, 5, 6]
    x = latents(4)
    got = run_ours(masked, prompt=prompts, negative_prompt=negatives, latents=x, num_images_per_prompt=2)
    for i in range(2):  # one prompt at a time: the cut embeddings differ in length
        kwargs = dict(prompt_embeds=cut(prompts[i]), negative_prompt_embeds=cut(negatives[i]))
        want = run_ours(pipe, latents=x[2 * i : 2 * i + 2], num_images_per_prompt=2, **kwargs)
        # batched and one-prompt runs take different CPU kernels: usually ~1e-5 apart, up to ~1e-3
        assert max_diff(got[2 * i : 2 * i + 2], want) < 5e-3
    unmasked = run_ours(pipe, prompt=prompts, negative_prompt=negatives, latents=x, num_images_per_prompt=2)
    assert max_diff(got, unmasked) > 1e-3  # the padding is read otherwise
    with pytest.raises(ValueError, match="needs the token ids"), torch.inference_mode():
        run_ours(masked, prompt_embeds=pipe.text_encoder(pipe.tokenizer(prompts[0]))[0])


def test_output_types(pipe):
    kwargs = dict(prompt=PROMPT, latents=latents(), num_inference_steps=1)
    got = run_ours(pipe, **kwargs)
    pt = run_ours(pipe, output_type="pt", **kwargs)
    assert pt.shape == (1, 3, SIZE, SIZE) and max_diff(pt.permute(0, 2, 3, 1), got) < 1e-6
    lat = run_ours(pipe, output_type="latent", **kwargs)
    assert lat.shape == (1, 4, SIZE // 8, SIZE // 8)
    assert max_diff(pipe.decode_latents(lat).permute(0, 2, 3, 1), got) < 1e-6
    (image,) = run_ours(pipe, output_type="pil", **kwargs)
    assert isinstance(image, Image.Image) and image.size == (SIZE, SIZE)
    assert np.array_equal(np.asarray(image), (got[0] * 255).round().astype(np.uint8))
    images, nsfw = pipe(**kwargs, output_type="np", return_dict=False, progress=False)
    assert nsfw is None and max_diff(images, got) == 0


def test_default_size_comes_from_the_model(pipe, ref):
    """As in diffusers: height = width = unet.config.sample_size * vae_scale_factor (8 * 8 here)."""
    got = pipe(PROMPT, num_inference_steps=1, output_type="np", progress=False)
    want = ref(PROMPT, num_inference_steps=1, output_type="np")
    assert got.images.shape == want.images.shape == (1, 64, 64, 3)
    assert got.nsfw_content_detected is None


def test_step_end_callback_can_replace_the_latents(pipe):
    seen = []

    def on_step_end(p, i, t, tensors):
        seen.append((p is pipe, i, tuple(tensors)))
        return {"latents": torch.zeros_like(tensors["latents"])}

    kwargs = dict(prompt=PROMPT, latents=latents(), output_type="latent", callback_on_step_end=on_step_end)
    out = run_ours(pipe, "ddim", **kwargs)  # DDIM: one UNet call per step
    assert seen == [(True, 0, ("latents",)), (True, 1, ("latents",))] and not out.any()


@pytest.mark.parametrize("kwargs", [dict(eta=0.5), dict(guidance_rescale=0.7), dict(timesteps=[999, 500])])
def test_unimplemented_diffusers_arguments_are_refused_by_name(pipe, kwargs):
    (name,) = kwargs
    with pytest.raises(NotImplementedError, match=rf"{name}="):
        run_ours(pipe, prompt=PROMPT, **kwargs)


def test_swapping_the_scheduler_object(pipe, ref):
    from minisd.schedulers import get_scheduler

    x = latents()
    original = pipe.scheduler
    pipe.scheduler = get_scheduler("ddim", pipe.scheduler_config)
    try:
        got = run_ours(pipe, scheduler=None, prompt=PROMPT, latents=x)
    finally:
        pipe.scheduler = original
    assert max_diff(got, run_ref(ref, "ddim", prompt=PROMPT, latents=x)) < 2e-3


# ---------------------------------------------------------------------------- single files


def test_single_file_and_round_trip(folder, pipe, tmp_path):
    x = latents()
    want = run_ours(pipe, prompt=PROMPT, latents=x)
    convert.folder_to_single_file(folder, tmp_path / "sd.safetensors")
    single = StableDiffusionPipeline.from_pretrained(tmp_path / "sd.safetensors", config=folder, device="cpu")
    assert weight_digests(single) == weight_digests(pipe)
    assert max_diff(run_ours(single, prompt=PROMPT, latents=x), want) < SAME_WEIGHTS_ATOL
    convert.single_file_to_folder(tmp_path / "sd.safetensors", tmp_path / "back", config=folder)
    back = StableDiffusionPipeline.from_pretrained(tmp_path / "back", device="cpu")
    assert weight_digests(back) == weight_digests(pipe)
    assert max_diff(run_ours(back, prompt=PROMPT, latents=x), want) < SAME_WEIGHTS_ATOL


def test_dtype_bf16(folder, pipe):
    half = StableDiffusionPipeline.from_pretrained(folder, device="cpu", dtype=torch.bfloat16)
    assert half.unet.dtype == half.vae.dtype == torch.bfloat16
    x = latents()
    got = run_ours(half, prompt=PROMPT, latents=x, num_inference_steps=1)
    want = run_ours(pipe, prompt=PROMPT, latents=x, num_inference_steps=1)
    assert got.dtype == np.float32 and 0 < max_diff(got, want) < 0.1


# ---------------------------------------------------------------------------- bad inputs


def test_wrong_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model at"):
        StableDiffusionPipeline.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        StableDiffusionPipeline.from_pretrained(tmp_path)


def test_truncated_single_file(folder, tmp_path):
    path = tmp_path / "sd.safetensors"
    convert.folder_to_single_file(folder, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="sd.safetensors.*truncated"):
        StableDiffusionPipeline.from_pretrained(path, config=folder)


def test_unknown_scheduler_in_folder_fails_before_loading(folder, tmp_path):
    import json
    import shutil

    copy = Path(shutil.copytree(folder, tmp_path / "sd", ignore=shutil.ignore_patterns("*.safetensors")))
    config = json.loads((copy / "scheduler" / "scheduler_config.json").read_text())
    config["_class_name"] = "HeunDiscreteScheduler"
    (copy / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown scheduler 'HeunDiscreteScheduler'"):
        StableDiffusionPipeline.from_pretrained(copy)  # no weights copied: it must fail before reading them


def test_sdxl_file(tmp_path):
    ck.save_checkpoint(
        {"conditioner.embedders.1.model.positional_embedding": torch.zeros(2)}, tmp_path / "xl.ckpt"
    )
    with pytest.raises(CheckpointError, match="xl.ckpt is an SDXL checkpoint"):
        StableDiffusionPipeline.from_pretrained(tmp_path / "xl.ckpt")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"height": 60}, "multiples of 64 .*nearest are 64 and 128"),
        ({"scheduler": "heun"}, "unknown scheduler 'heun'"),
        ({"output_type": "jpg"}, "unknown output_type"),
        ({"prompt": None}, "either prompt"),
        ({"negative_prompt": ["a", "b"]}, "2 negative prompts for 1 prompts"),
        ({"latents": torch.zeros(1, 4, 4, 4)}, "latents have shape"),
    ],
)
def test_bad_call_arguments(pipe, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_ours(pipe, **{"prompt": PROMPT, **kwargs})


# ---------------------------------------------------------------------------- CLI


def test_cli_generate(folder, tmp_path, capsys):
    out = tmp_path / "out.png"
    main(["generate", PROMPT, "--weights", str(folder), "-o", str(out), "--steps", "1", "--height", "64",
          "--width", "64", "--scheduler", "ddim", "--negative-prompt", "blurry", "--seed", "3"])  # fmt: skip
    assert Image.open(out).size == (64, 64) and "wrote" in capsys.readouterr().out


# ---------------------------------------------------------------------------- full size and real weights


@pytest.mark.slow
def test_full_size_v15_random_weights(sd15_folder, tmp_path):
    """The v1.5 configuration (860M-parameter UNet) with random weights, 64x64 pixels, 2 steps."""
    ours = StableDiffusionPipeline.from_pretrained(sd15_folder, device="cpu")
    assert ours.unet.num_parameters() == 859_520_964 and ours.vae.num_parameters() == 83_653_863
    assert ours.text_encoder.num_parameters() == 123_060_480
    x = latents()
    kwargs = dict(prompt=PROMPT, latents=x, num_inference_steps=2)
    got, weights = run_ours(ours, **kwargs), weight_digests(ours)
    del ours
    assert max_diff(got, run_ref(load_ref(sd15_folder), **kwargs)) < 2e-3
    # the original single file with the packaged v1.5 configs (config=None), like v1-5-pruned-emaonly
    convert.folder_to_single_file(sd15_folder, tmp_path / "sd15.safetensors")
    single = StableDiffusionPipeline.from_pretrained(tmp_path / "sd15.safetensors", device="cpu")
    assert weight_digests(single) == weights
    assert max_diff(run_ours(single, **kwargs), got) < SAME_WEIGHTS_ATOL


@pytest.mark.sd15
@pytest.mark.skipif(
    not os.environ.get("MINISD_SD15"), reason="set MINISD_SD15 to an SD v1.5 diffusers folder"
)
def test_real_weights_match_diffusers():
    folder = Path(os.environ["MINISD_SD15"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = dict(prompt=PROMPT, num_inference_steps=10, height=256, width=256, output_type="np")
    ours = StableDiffusionPipeline.from_pretrained(folder, device=device)
    got = ours(generator=torch.Generator().manual_seed(0), progress=False, **kwargs)
    del ours
    ref = RefPipeline.from_pretrained(folder, safety_checker=None).to(device)
    want = ref(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert max_diff(got, want) < 2e-3


def test_hub_ids_are_downloaded_with_huggingface_hub(folder, monkeypatch):
    """A hub id goes through huggingface_hub.snapshot_download (faked here: no test needs a network)."""
    import sys
    import types

    asked = {}

    def snapshot_download(repo_id, allow_patterns):
        asked.update(repo_id=repo_id, patterns=allow_patterns)
        return str(folder)

    monkeypatch.setitem(
        sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download)
    )
    pipe = StableDiffusionPipeline.from_pretrained("someone/tiny-sd", device="cpu")
    assert (
        asked["repo_id"] == "someone/tiny-sd"
        and "unet/diffusion_pytorch_model.safetensors" in asked["patterns"]
    )
    assert pipe.unet.num_parameters() > 0
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(ImportError, match=r"not a local file.*pip install \"minisd\[hub\]\"") as missing:
        StableDiffusionPipeline.from_pretrained("someone/tiny-sd", device="cpu")
    assert 'pip install -e ".[hub]"' in str(missing.value) and not isinstance(
        missing.value, FileNotFoundError
    )
