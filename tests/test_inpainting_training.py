"""The tiny inpainting recipe (minisd.training.inpainting): the zero-initialised 9-channel UNet equals the
base model at step 0, the synthetic masks (some cut around the scenes' objects), and a short resumable
run that loads as an inpainting model."""

import numpy as np
import pytest
import torch

from minisd.models import UNet2DConditionModel
from minisd.pipelines import StableDiffusionInpaintPipeline
from minisd.schedulers import DDPMScheduler
from minisd.shapes import TINY_CONFIGS, ShapesDataset, render_scene, shape_mask, tiny_model_path
from minisd.training.inpainting import (
    KEPT_WEIGHT_MAX,
    inpainting_unet,
    kept_region_weight,
    masked_inputs,
    random_masks,
    train_inpainting,
)


def test_zero_initialised_channels_keep_the_base_model():
    torch.manual_seed(0)
    base = UNet2DConditionModel.from_config(TINY_CONFIGS["unet"]).eval()
    unet = inpainting_unet(base).eval()
    assert unet.config["in_channels"] == 9
    x, extra = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8, 8)
    context, t = torch.randn(2, 77, 64), torch.tensor([10, 900])
    with torch.no_grad():
        ours = unet(torch.cat([x, extra], dim=1), t, context).sample
        ref = base(x, t, context).sample
    assert torch.equal(ours, ref)


def _around_an_object(mask: np.ndarray, scene) -> bool:
    """Whether the mask touches an object and lies inside its bounding box grown by 4 pixels."""
    for shape in scene.shapes:
        pixels = shape_mask(shape, 32)
        ys, xs = np.nonzero(pixels)
        box = np.zeros_like(pixels)
        box[max(0, ys.min() - 4) : ys.max() + 5, max(0, xs.min() - 4) : xs.max() + 5] = True
        if (mask & pixels).any() and not (mask & ~box).any():
            return True
    return False


def test_random_masks_mix_full_objects_rectangles_strokes_and_none():
    dataset = ShapesDataset(length=400, seed=0)
    scenes = [dataset.scene(i) for i in range(400)]
    masks = random_masks(400, 32, torch.Generator().manual_seed(0), scenes)
    assert masks.shape == (400, 1, 32, 32) and set(masks.unique().tolist()) <= {0.0, 1.0}
    covered = masks.mean(dim=(1, 2, 3))
    full = (covered == 1).float().mean().item()
    assert 0.04 < full < 0.15  # a tenth of nine tenths fully masked
    assert 0.05 < (covered == 0).float().mean() < 0.16  # a tenth with nothing to repaint
    assert ((covered > 0) & (covered < 1)).float().mean() > 0.7  # the rest partly masked
    # about 40% are boxes cut around an object; random rectangles and strokes seldom are
    around = np.mean(
        [_around_an_object(m, s) for m, s in zip(masks[:, 0].numpy() > 0.5, scenes, strict=True)]
    )
    blind = random_masks(400, 32, torch.Generator().manual_seed(0))  # no scenes: rectangles instead
    around_blind = np.mean(
        [_around_an_object(m, s) for m, s in zip(blind[:, 0].numpy() > 0.5, scenes, strict=True)]
    )
    assert around > 0.3 and around > around_blind + 0.2


def test_kept_region_weight_turns_the_noise_loss_into_the_x0_loss():
    """In kept cells the weighted noise error is the error of the implied x0 estimate (up to the cap),
    in the cells to repaint it is the plain noise error."""
    abar = DDPMScheduler.from_config(TINY_CONFIGS["scheduler"]).alphas_cumprod
    t = torch.tensor([5, 500, 600, 999])
    small = torch.zeros(4, 1, 8, 8)
    small[:, :, :, 4:] = 1  # the right half is repainted
    w = kept_region_weight(t, small, abar)  # [4, 1, 8, 8]
    assert w.shape == (4, 1, 8, 8) and torch.equal(w[:, :, :, 4:], torch.ones(4, 1, 8, 4))
    gen = torch.Generator().manual_seed(0)
    x0, noise, guess = (torch.randn(4, 4, 8, 8, generator=gen) for _ in range(3))
    a = abar[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
    x0_guess = (noisy - (1 - a).sqrt() * guess) / a.sqrt()  # what DDIM's step computes from the guess
    ratio = ((x0_guess - x0) ** 2 / (guess - noise) ** 2)[:, :, :, :4]  # kept cells
    kept = w[:, :, :, :4].expand_as(ratio)
    uncapped = ratio <= KEPT_WEIGHT_MAX
    assert uncapped[1:3].all() and not uncapped[3].any()  # t = 500, 600 below the cap; t = 999 above
    torch.testing.assert_close(kept[1:3], ratio[1:3], rtol=1e-4, atol=0)
    assert torch.equal(kept[0], torch.ones_like(kept[0]))  # t = 5: x0 error below the noise error
    assert torch.equal(kept[3], torch.full_like(kept[3], KEPT_WEIGHT_MAX))


def test_training_conditioning_is_what_the_pipeline_feeds():
    """The 5 extra channels of training (`masked_inputs`) equal what the pipeline gives the UNet, in both
    halves of classifier-free guidance, for the same pictures, masks and random draws: the blanking
    value, the mask's binarisation and downsampling, the posterior sample and the scaling factor."""
    torch.set_num_threads(1)
    pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny_model_path(), device="cpu")
    pipe.unet = inpainting_unet(pipe.unet)
    dataset = ShapesDataset(length=3, seed=0)
    scenes = [dataset.scene(i) for i in range(3)]
    pictures = np.stack([render_scene(s, 32) for s in scenes])  # uint8 [3, 32, 32, 3]
    masks = random_masks(3, 32, torch.Generator().manual_seed(0), scenes)  # [3, 1, 32, 32]
    seen, forward = [], pipe.unet.forward

    def record(sample, *args, **kwargs):
        seen.append(sample.clone())  # [2 * 3, 9, 8, 8]: unconditional half, then conditional
        return forward(sample, *args, **kwargs)

    pipe.unet.forward = record
    pipe(
        [s.caption for s in scenes], image=pictures / 255.0, mask_image=masks.permute(0, 2, 3, 1).numpy(),
        num_inference_steps=1, guidance_scale=3.0, generator=torch.Generator().manual_seed(5), progress=False,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(5)
    torch.randn(3, 4, 8, 8, generator=gen)  # the pipeline draws the start noise first
    images = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 127.5 - 1  # as RenderedDataset
    expected = masked_inputs(pipe.vae, images, masks, gen)  # [3, 5, 8, 8]
    assert len(seen) == 1 and seen[0].shape == (6, 9, 8, 8)
    assert torch.equal(seen[0][:3, 4:], expected) and torch.equal(seen[0][3:, 4:], expected)


def test_short_run_resumes_and_loads(tmp_path):
    torch.set_num_threads(1)
    kwargs = dict(batch_size=4, num_scenes=8, checkpoint_dir=tmp_path / "ckpt", progress=False)
    first = train_inpainting(tmp_path / "a", steps=2, **kwargs)
    resumed = train_inpainting(tmp_path / "b", steps=3, **kwargs)
    assert len(first["losses"]) == 2 and resumed["losses"][:2] == first["losses"]
    pipe = StableDiffusionInpaintPipeline.from_pretrained(tmp_path / "b", device="cpu")
    assert pipe.unet.config["in_channels"] == 9 and pipe.mask_text_padding
    picture, mask = torch.zeros(1, 3, 32, 32), torch.ones(1, 1, 32, 32)
    out = pipe("a red circle", image=picture, mask_image=mask, num_inference_steps=2, output_type="np").images
    assert out.shape == (1, 32, 32, 3)


def test_tiny_model_bad_input():
    """The tiny model's size step (16 pixels) and a 9-channel UNet outside the inpainting pipeline."""
    from minisd.errors import UserError
    from minisd.pipelines import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
    from minisd.shapes import tiny_model_path

    pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny_model_path(), device="cpu")
    with pytest.raises(UserError, match="multiples of 16 .*resize or crop it to 32x32"):
        pipe("a red circle", image=torch.zeros(3, 40, 40), mask_image=torch.zeros(1, 40, 40))
    unet = inpainting_unet(pipe.unet)
    for cls, kwargs in (
        (StableDiffusionPipeline, {}),
        (StableDiffusionImg2ImgPipeline, {"image": torch.zeros(3, 32, 32)}),
    ):
        other = cls(pipe.vae, pipe.text_encoder, pipe.tokenizer, unet, pipe.scheduler)
        with pytest.raises(UserError, match="reads 9 input channels.*StableDiffusionInpaintPipeline"):
            other("a red circle", num_inference_steps=2, **kwargs)


def test_cli_refuses_a_destination_before_training(tmp_path, capsys):
    from minisd.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train-inpainting", str(tmp_path / "missing" / "out"), "--steps", "1"])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
