"""minisd.StableDiffusionInpaintPipeline against diffusers' on random-weight models: a text-to-image UNet
(4 input channels: the known region blended in at every step) and an inpainting UNet (9 channels)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, PNDMScheduler
from diffusers import StableDiffusionInpaintPipeline as RefPipeline
from PIL import Image
from test_img2img import max_diff, picture, seeded
from tiny_sd import (
    SAME_WEIGHTS_ATOL,
    TINY_UNET,
    save_diffusers_pipeline,
    save_sd15_pipeline,
    weight_digests,
)

from minisd import convert
from minisd.errors import UserError
from minisd.pipelines import StableDiffusionInpaintPipeline, apply_overlay, blur_mask

PROMPT = "a photograph of an astronaut riding a horse"
SIZE = 64
REF_SCHEDULERS = {"pndm": PNDMScheduler, "ddim": DDIMScheduler, "euler_a": EulerAncestralDiscreteScheduler}


def mask(size: int = SIZE) -> Image.Image:
    """White (repaint) on the right half's middle rows, black (keep) elsewhere."""
    m = np.zeros((size, size), np.uint8)
    m[size // 4 : 3 * size // 4, size // 2 :] = 255
    return Image.fromarray(m)


def load_ref(folder):
    ref = RefPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False, dtype=torch.float32
    ).to("cpu")
    ref.set_progress_bar_config(disable=True)
    ref.saved_scheduler_config = ref.scheduler.config
    return ref


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(1)  # fixed weights, whatever ran before (see test_img2img's folder)
    return {
        4: save_diffusers_pipeline(root / "sd"),
        9: save_diffusers_pipeline(root / "inpaint", unet={**TINY_UNET, "in_channels": 9}),
    }


@pytest.fixture(scope="module")
def refs(folders):
    return {k: load_ref(f) for k, f in folders.items()}


@pytest.fixture(scope="module")
def pipes(folders):
    return {k: StableDiffusionInpaintPipeline.from_pretrained(f, device="cpu") for k, f in folders.items()}


def call_args(kwargs):
    args = dict(prompt=PROMPT, image=picture(), mask_image=mask(), num_inference_steps=5, output_type="np")
    return {**args, "generator": seeded(), **kwargs}


def run_ref(ref, scheduler="ddim", **kwargs):
    ref.scheduler = REF_SCHEDULERS[scheduler].from_config(ref.saved_scheduler_config)
    return ref(**call_args(kwargs)).images


def run_ours(pipe, scheduler="ddim", **kwargs):
    return pipe(scheduler=scheduler, progress=False, **call_args(kwargs)).images


# ---------------------------------------------------------------------------- parity with diffusers


@pytest.mark.parametrize(
    "channels, scheduler, strength",
    [(4, "ddim", 1.0), (4, "euler_a", 0.75), (4, "pndm", 1.0), (9, "ddim", 1.0), (9, "euler_a", 0.6)],
)
def test_images_equal_diffusers(pipes, refs, channels, scheduler, strength):
    want = run_ref(refs[channels], scheduler, strength=strength)
    got = run_ours(pipes[channels], scheduler, strength=strength)
    assert got.shape == want.shape == (1, SIZE, SIZE, 3) and want.std() > 0.01
    assert max_diff(got, want) < 2e-3


def test_given_masked_image_latents_and_start_noise(pipes, refs):
    z = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=seeded(5))
    noise = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=seeded(6))
    kwargs = dict(masked_image_latents=z, latents=noise, guidance_scale=1.0)
    assert max_diff(run_ours(pipes[9], **kwargs), run_ref(refs[9], **kwargs)) < 2e-3


def test_mask_forms_mean_the_same(pipes):
    """A 0/255 uint8 array, three equal channels and a [0, 1] tensor are the same mask as the PIL one."""
    want = run_ours(pipes[4])
    m = np.asarray(mask())
    for form in (m, np.repeat(m[..., None], 3, -1), torch.from_numpy(m / 255.0)[None].float()):
        assert max_diff(run_ours(pipes[4], mask_image=form), want) == 0


def test_strength_zero_returns_the_autoencoded_input(pipes, refs):
    got = run_ours(pipes[9], strength=0.0)
    ref = refs[9]
    with torch.no_grad():
        z = ref.vae.encode(ref.image_processor.preprocess(picture())).latent_dist.sample(seeded())
        want = (ref.vae.decode(z).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert max_diff(got, want) < 2e-3


def test_nine_channel_single_file_reads_its_input_channels(folders, pipes, tmp_path):
    """The original layout's `input_blocks.0.0.weight` [32, 9, 3, 3] decides in_channels, even with a
    config folder (here the text-to-image one) that says 4."""
    path = tmp_path / "inpaint.safetensors"
    convert.folder_to_single_file(folders[9], path)
    single = StableDiffusionInpaintPipeline.from_pretrained(path, config=folders[4], device="cpu")
    assert single.unet.config["in_channels"] == 9
    assert weight_digests(single) == weight_digests(pipes[9])
    assert max_diff(run_ours(single), run_ours(pipes[9])) < SAME_WEIGHTS_ATOL
    convert.single_file_to_folder(path, tmp_path / "back", config=folders[4])
    back = StableDiffusionInpaintPipeline.from_pretrained(tmp_path / "back", device="cpu")
    assert back.unet.config["in_channels"] == 9


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "channels, kwargs, match",
    [
        (4, {"mask_image": mask(32)}, "mask_image is 32x32 pixels and image 64x64"),
        (4, {"image": picture(60), "mask_image": mask(60)}, "multiples of 64 .*resize or crop it to 64x64"),
        (4, {"mask_image": np.zeros((64, 64, 3)) + [0, 0.5, 1]}, "3 different colour channels.*convert"),
        (4, {"mask_image": np.full((64, 64), 255.0)}, r"values up to 255: divide by 255"),
        (4, {"mask_image": np.full((64, 64), -1.0)}, r"mask_image values run from -1 to -1"),
        (4, {"mask_image": None}, "give image .* and mask_image"),
        (4, {"strength": 2}, r"strength=2: it must be in \[0, 1\]"),
        (4, {"height": 128, "width": 128}, "differ from the picture's 64x64: resize"),
        (4, {"masked_image_latents": torch.zeros(1, 4, 8, 8)}, "inpainting UNets .*in_channels 9.* reads 4"),
        (9, {"masked_image_latents": torch.zeros(1, 4, 4, 4)}, r"this picture needs \[B, 4, 8, 8\]"),
        (4, {"image": torch.zeros(1, 4, 8, 8)}, "4 channels: give an RGB picture"),
        (4, {"padding_mask_crop": 8}, "does not implement padding_mask_crop=8"),
    ],
)
def test_bad_input(pipes, channels, kwargs, match):
    with pytest.raises((UserError, NotImplementedError), match=match):
        run_ours(pipes[channels], **kwargs)


# ---------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_full_size_v15_inpainting_random_weights(tmp_path):
    """The sd-v1-5-inpainting configuration (9 input channels) with random weights, 64x64, 2 steps."""
    folder = save_sd15_pipeline(tmp_path / "sd15", in_channels=9)
    ours = StableDiffusionInpaintPipeline.from_pretrained(folder, device="cpu")
    size = dict(height=SIZE, width=SIZE)  # diffusers would resize the picture to the UNet's 512 x 512
    got = run_ours(ours, num_inference_steps=2, **size)
    del ours
    assert max_diff(got, run_ref(load_ref(folder), num_inference_steps=2, **size)) < 2e-3


@pytest.mark.parametrize("blur_factor", [None, 3])
def test_paste_back_matches_diffusers(blur_factor):
    """apply_overlay (and a blurred mask) as diffusers' VaeImageProcessor does them, within PIL's rounding
    of premultiplied alpha; the kept region is the input exactly where the mask is 0."""
    from diffusers.image_processor import VaeImageProcessor

    rng = np.random.default_rng(0)
    init, new = (Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(2))
    m = mask()
    processor = VaeImageProcessor()
    if blur_factor is not None:
        ours_mask, m = blur_mask(m, blur_factor), processor.blur(m, blur_factor)
        assert np.array_equal(np.asarray(ours_mask), np.asarray(m))
    ours = np.asarray(apply_overlay(m, init, new)).astype(int)
    ref = np.asarray(processor.apply_overlay(m, init, new)).astype(int)
    assert np.abs(ours - ref).max() <= 2
    keep = np.asarray(m) == 0
    assert np.array_equal(ours[keep], np.asarray(init)[keep])
    assert np.array_equal(ours[np.asarray(m) == 255], np.asarray(new)[np.asarray(m) == 255])


def test_paste_back_refuses_other_sizes():
    with pytest.raises(UserError, match="mask's size"):
        apply_overlay(mask(), Image.new("RGB", (32, 32)), Image.new("RGB", (SIZE, SIZE)))
