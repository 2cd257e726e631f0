"""StableDiffusionControlNetPipeline against diffusers' on the same random-weight model and ControlNets,
with injected latents: one and two ControlNets, guess mode, guidance windows."""

import inspect

import diffusers
import numpy as np
import pytest
import torch
from diffusers import ControlNetModel as RefControlNet
from diffusers import StableDiffusionControlNetPipeline as RefPipeline
from PIL import Image
from tiny_sd import randomize, save_diffusers_pipeline

from minisd.errors import UserError
from minisd.models.controlnet import ControlNetModel
from minisd.pipelines import StableDiffusionPipeline
from minisd.pipelines.controlnet import StableDiffusionControlNetPipeline, prepare_control_image

PROMPT = "a red circle on a blue background"
SIZE = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(ours, reference pipeline with one ControlNet, the two ControlNets of each side)."""
    root = tmp_path_factory.mktemp("controlnet")
    folder = save_diffusers_pipeline(root / "sd")
    ref = diffusers.StableDiffusionPipeline.from_pretrained(folder).to("cpu")  # parts for RefPipeline
    ref_nets = []
    for i in range(2):
        net = RefControlNet.from_unet(ref.unet, conditioning_embedding_out_channels=(8, 8, 16, 32))
        randomize(net, 0.05).save_pretrained(root / f"controlnet{i}")
        ref_nets.append(RefControlNet.from_pretrained(root / f"controlnet{i}").eval())
    nets = [ControlNetModel.from_pretrained(root / f"controlnet{i}").eval() for i in range(2)]
    ours = StableDiffusionControlNetPipeline.from_pretrained(folder, controlnet=nets[0], device="cpu")
    return ours, ref, nets, ref_nets


def conditions(n=2):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(n)]


def run_both(setup, controlnets: int, **kwargs):
    ours, ref, nets, ref_nets = setup
    x = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(1))
    images = conditions()
    image = images[0] if controlnets == 1 else images
    ours = StableDiffusionControlNetPipeline(
        ours.vae,
        ours.text_encoder,
        ours.tokenizer,
        ours.unet,
        nets[0] if controlnets == 1 else nets,
        ours.scheduler,
    )
    ref = RefPipeline(
        ref.vae, ref.text_encoder, ref.tokenizer, ref.unet,
        ref_nets[0] if controlnets == 1 else ref_nets, ref.scheduler, None, None,
        requires_safety_checker=False,
    )  # fmt: skip
    args = dict(prompt=PROMPT, image=image, num_inference_steps=4, latents=x, output_type="np", **kwargs)
    return ours(**args, progress=False).images, ref(**args).images


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@pytest.mark.parametrize(
    "controlnets,kwargs",
    [
        (1, dict(controlnet_conditioning_scale=0.8)),
        (1, dict(guess_mode=True, guidance_scale=4.0)),
        (1, dict(control_guidance_start=0.25, control_guidance_end=0.75)),
        (2, dict(controlnet_conditioning_scale=[0.6, 1.2])),
        (2, dict(control_guidance_start=[0.0, 0.5], control_guidance_end=[0.5, 1.0], guess_mode=True)),
    ],
    ids=["one", "guess_mode", "window", "two", "two_windows_guess"],
)
def test_images_equal_diffusers(setup, controlnets, kwargs):
    got, want = run_both(setup, controlnets, **kwargs)
    assert got.shape == want.shape == (1, SIZE, SIZE, 3)
    assert max_diff(got, want) < 2e-3


def test_the_condition_changes_the_image_and_scale_zero_does_not(setup):
    ours, _, nets, _ = setup
    x = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(1))
    args = dict(prompt=PROMPT, num_inference_steps=4, latents=x, output_type="np", progress=False)
    parts = (ours.vae, ours.text_encoder, ours.tokenizer, ours.unet)
    pipe = StableDiffusionControlNetPipeline(*parts, nets[0], ours.scheduler)
    controlled = pipe(image=conditions()[0], **args).images
    off = pipe(image=conditions()[0], controlnet_conditioning_scale=0.0, **args).images
    base = StableDiffusionPipeline(*parts, ours.scheduler)(height=SIZE, width=SIZE, **args).images
    assert np.array_equal(off, base) and max_diff(controlled, base) > 1e-2


def test_condition_preprocessing_matches_diffusers():
    from diffusers.image_processor import VaeImageProcessor

    reference = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True, do_normalize=False)
    gray = Image.fromarray(np.random.default_rng(1).integers(0, 256, (70, 90), dtype=np.uint8))
    for image, size in [(gray, (None, None)), (gray, (64, 128)), (conditions(1)[0], (32, 32))]:
        got = prepare_control_image(image, *size)
        assert torch.equal(got, reference.preprocess(image, *size))
    array = np.random.default_rng(2).random((40, 48, 3)).astype(np.float32)
    tensor = torch.rand(2, 3, 20, 24)
    for x in (array, tensor):
        torch.testing.assert_close(prepare_control_image(x, 64, 64), reference.preprocess(x, 64, 64))
    assert prepare_control_image(gray, None, None).shape == (1, 3, 64, 88)  # rounded down to 8
    assert (
        prepare_control_image(gray, None, None).max() <= 1
        and prepare_control_image(gray, None, None).min() >= 0
    )


def test_bad_condition_images_are_refused(setup):
    ours = setup[0]
    ours.controlnet = setup[2][0]
    with pytest.raises(UserError, match="1 channels; this ControlNet reads 3"):
        ours(PROMPT, image=torch.rand(1, 1, SIZE, SIZE), num_inference_steps=1, progress=False)
    with pytest.raises(UserError, match="one condition image per ControlNet"):
        ours(PROMPT, num_inference_steps=1, progress=False)
    with pytest.raises(UserError, match="control_guidance_start=0.8, control_guidance_end=0.2"):
        ours(PROMPT, image=conditions(1)[0], control_guidance_start=0.8, control_guidance_end=0.2)
    with pytest.raises(UserError, match="multiples of 64"):
        ours(PROMPT, image=conditions(1)[0].resize((40, 40)), num_inference_steps=1, progress=False)


def test_call_signature_starts_with_diffusers():
    def params(fn):
        skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values() if p.kind not in skip]

    want = params(RefPipeline.__call__)
    assert params(StableDiffusionControlNetPipeline.__call__)[: len(want)] == want
