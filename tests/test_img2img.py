"""minisd.StableDiffusionImg2ImgPipeline against diffusers' on the same random-weight model, with the same
seeded generator (it draws the VAE's posterior sample, the start noise and Euler ancestral's noise)."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, PNDMScheduler
from diffusers import StableDiffusionImg2ImgPipeline as RefPipeline
from PIL import Image
from tiny_sd import save_diffusers_pipeline

from minisd.__main__ import main
from minisd.errors import UserError
from minisd.pipelines import StableDiffusionImg2ImgPipeline, strength_timesteps
from minisd.schedulers import get_scheduler

PROMPT = "a photograph of an astronaut riding a horse"
SIZE = 64
REF_SCHEDULERS = {"pndm": PNDMScheduler, "ddim": DDIMScheduler, "euler_a": EulerAncestralDiscreteScheduler}


def picture(size: int = SIZE, seed: int = 0) -> Image.Image:
    """A smooth colour picture: gradients plus a bright square."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([x, y, 1 - x * y], -1) * 0.8 + rng.uniform(0, 0.1, 3)
    rgb[size // 4 : size // 2, size // 4 : size // 2] = 1.0
    return Image.fromarray((rgb.clip(0, 1) * 255).astype(np.uint8))


def seeded(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # fixed weights, whatever ran before: some random draws make a chaotic model (one drew here turns a
    # 1.5e-5 change of the latents after Euler ancestral's first step into 0.014 in diffusers' own output)
    torch.manual_seed(1)
    return save_diffusers_pipeline(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="module")
def ref(folder):
    pipe = RefPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    pipe.saved_scheduler_config = pipe.scheduler.config
    return pipe


@pytest.fixture(scope="module")
def pipe(folder):
    return StableDiffusionImg2ImgPipeline.from_pretrained(folder, device="cpu")


def run_ref(ref, scheduler="ddim", **kwargs):
    ref.scheduler = REF_SCHEDULERS[scheduler].from_config(ref.saved_scheduler_config)
    args = dict(prompt=PROMPT, image=picture(), num_inference_steps=10, output_type="np", generator=seeded())
    return ref(**{**args, **kwargs}).images


def run_ours(pipe, scheduler="ddim", **kwargs):
    args = dict(prompt=PROMPT, image=picture(), num_inference_steps=10, output_type="np", generator=seeded())
    return pipe(scheduler=scheduler, progress=False, **{**args, **kwargs}).images


# ---------------------------------------------------------------------------- parity with diffusers


@pytest.mark.parametrize("scheduler", ["ddim", "pndm", "euler_a"])
@pytest.mark.parametrize("strength", [0.3, 0.75, 1.0])
def test_images_equal_diffusers(pipe, ref, scheduler, strength):
    want = run_ref(ref, scheduler, strength=strength)
    got = run_ours(pipe, scheduler, strength=strength)
    assert got.shape == want.shape == (1, SIZE, SIZE, 3)
    assert want.std() > 0.01
    assert max_diff(got, want) < 2e-3


def test_batch_of_pictures_per_prompt_generators_and_guidance_off(pipe, ref):
    kwargs = dict(
        prompt=["a red cube", "a blue sphere"],
        image=[picture(seed=1), picture(seed=2)],
        num_images_per_prompt=2,
        strength=0.6,
    )
    # a generator per image (each picture encoded with its own; Euler a's noise per image), then one for
    # all (the two pictures encoded once, then repeated); each run gets fresh generators
    for name, generators in (("euler_a", lambda: [seeded(s) for s in range(4)]), ("ddim", seeded)):
        want = run_ref(ref, name, generator=generators(), **kwargs)
        assert want.shape == (4, SIZE, SIZE, 3)
        assert max_diff(run_ours(pipe, name, generator=generators(), **kwargs), want) < 2e-3
    kwargs = dict(guidance_scale=1.0, image=np.asarray(picture(), dtype=np.float32) / 255, strength=0.5)
    assert max_diff(run_ours(pipe, **kwargs), run_ref(ref, **kwargs)) < 2e-3


def test_the_number_of_steps_that_run(pipe):
    """int(steps * strength) UNet calls, the last ones of the schedule (PNDM: one more, its repeat)."""
    for name, strength, calls in [("ddim", 0.3, 3), ("ddim", 0.75, 7), ("ddim", 1.0, 10), ("pndm", 0.3, 4)]:
        seen = []
        run_ours(pipe, name, strength=strength, callback=lambda i, t, x: seen.append(int(t)))  # noqa: B023
        assert len(seen) == calls, (name, strength)
        scheduler = get_scheduler(name, pipe.scheduler_config)
        scheduler.set_timesteps(10)
        assert seen == [int(t) for t in scheduler.timesteps[-calls:]]
    scheduler = get_scheduler("euler_a", pipe.scheduler_config)
    scheduler.set_timesteps(10)
    assert len(strength_timesteps(scheduler, 10, 0.5)) == 5 and scheduler.begin_index == 5


def test_strength_zero_returns_the_autoencoded_input(pipe, ref):
    """No step runs: the input goes through the VAE (its posterior sampled with the generator)."""
    got = run_ours(pipe, strength=0.0)
    x = ref.image_processor.preprocess(picture())
    with torch.no_grad():
        z = ref.vae.encode(x).latent_dist.sample(seeded())
        want = (ref.vae.decode(z).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert max_diff(got, want) < 2e-3
    assert max_diff(run_ours(pipe, strength=0.05), want) < 2e-3  # int(10 * 0.05) = 0 steps too


def test_latents_as_the_input(pipe, ref):
    """A tensor with the VAE's latent channels is taken as latents, as diffusers does."""
    z = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=seeded(3))
    want = run_ref(ref, image=z, strength=0.5)
    assert max_diff(run_ours(pipe, image=z, strength=0.5), want) < 2e-3


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"strength": 1.5}, r"strength=1.5: it must be in \[0, 1\]"),
        ({"strength": -0.1}, r"strength=-0.1: it must be in \[0, 1\]"),
        ({"image": None}, "give image"),
        ({"image": picture(60)}, "image is 60x60 pixels .* multiples of 64 .*: resize or crop it to 64x64"),
        ({"image": np.zeros((64, 64, 4), np.float32)}, "4 channels: give an RGB picture"),
        ({"image": np.full((64, 64, 3), 200.0, np.float32)}, r"values up to 255: divide by 255"),
        ({"image": torch.full((3, 64, 64), -3.0)}, r"image values run from -3 to -3"),
        ({"image": [picture(), picture(seed=1), picture(seed=2)]}, "3 input pictures for 1 images"),
        ({"image": "photo.png"}, "must be a PIL image, a numpy array, a torch tensor"),
        ({"eta": 0.5}, "does not implement eta=0.5"),
    ],
)
def test_bad_input(pipe, kwargs, match):
    with pytest.raises((UserError, TypeError, NotImplementedError), match=match):
        run_ours(pipe, **kwargs)


def test_strength_must_be_a_number(pipe):
    with pytest.raises(TypeError, match="strength must be a number"):
        run_ours(pipe, strength="0.5")


# ---------------------------------------------------------------------------- CLI


def test_cli_init_image_strength_and_mask(folder, tmp_path, capsys):
    from test_inpaint import mask

    picture().save(tmp_path / "in.png")
    mask().save(tmp_path / "mask.png")
    common = ["generate", PROMPT, "--weights", str(folder), "--steps", "2", "--scheduler", "ddim"]
    main([*common, "--init-image", str(tmp_path / "in.png"), "--strength", "0.5",
          "-o", str(tmp_path / "a.png")])  # fmt: skip
    main([*common, "--init-image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
          "-o", str(tmp_path / "b.png")])  # fmt: skip
    assert Image.open(tmp_path / "a.png").size == Image.open(tmp_path / "b.png").size == (SIZE, SIZE)
    assert capsys.readouterr().out.count("wrote") == 2


def test_cli_reads_back_a_picture_it_saved_at_the_model_size(tmp_path, capsys):
    """The tiny model's PNGs are saved 8x enlarged; given back as --init-image they are shrunk to 32x32
    again (not drawn at 256x256, a size the model never saw), and the edit is saved 8x like any output."""
    out, edit = tmp_path / "out.png", tmp_path / "edit.png"
    main(["generate", "a red circle on a blue background", "--steps", "2", "-o", str(out)])
    main(["generate", "a green circle on a blue background", "--steps", "2", "--init-image", str(out),
          "--strength", "0.6", "-o", str(edit)])  # fmt: skip
    assert Image.open(out).size == Image.open(edit).size == (256, 256)
    assert capsys.readouterr().out.count("wrote") == 2


# ---------------------------------------------------------------------------- full size


@pytest.mark.slow
def test_full_size_v15_random_weights(sd15_folder):
    """The v1.5 configuration with random weights: 64x64 pixels, strength 0.5 of 4 steps."""
    ours = StableDiffusionImg2ImgPipeline.from_pretrained(sd15_folder, device="cpu")
    got = run_ours(ours, strength=0.5, num_inference_steps=4)
    del ours
    ref = RefPipeline.from_pretrained(
        sd15_folder, safety_checker=None, requires_safety_checker=False, dtype=torch.float32
    )
    ref.set_progress_bar_config(disable=True)
    ref.saved_scheduler_config = ref.scheduler.config
    assert max_diff(got, run_ref(ref, strength=0.5, num_inference_steps=4)) < 2e-3
