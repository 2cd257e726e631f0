"""minisd.metrics.editing: the task builders and measures, and bars on the tiny model's image-to-image
trade-off and on its packaged 9-channel inpainting UNet against the blend method."""

import numpy as np
import pytest
import torch

from minisd.metrics import editing
from minisd.models import UNet2DConditionModel
from minisd.pipelines import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
from minisd.shapes import render_scene, shape_mask, tiny_inpaint_unet_path, tiny_model_path


def test_recolour_tasks_change_only_the_colour():
    for source, target in editing.recolour_tasks(20, seed=1):
        a, b = source.shapes[0], target.shapes[0]
        assert a.color != b.color and b.color != source.background
        assert (a.shape, a.cx, a.cy, a.size) == (b.shape, b.cx, b.cy, b.size)


@pytest.mark.parametrize("kind", ["replace", "complete"])
def test_inpaint_tasks_masks(kind):
    for source, target, mask in editing.inpaint_tasks(20, seed=2, kind=kind):
        old = shape_mask(source.shapes[0], editing.SIZE)
        covered = (mask > 0.5)[old].mean()
        if kind == "replace":
            assert covered == 1.0 and target.shapes[0].color != source.shapes[0].color
        else:
            assert 0.15 < covered < 0.85 and target == source  # half the box: a triangle's top half is small


def test_object_mask_iou_and_psnr():
    source, _ = editing.recolour_tasks(1, seed=0)[0]
    picture = render_scene(source, editing.SIZE)
    assert editing.iou(editing.object_mask(picture), shape_mask(source.shapes[0], editing.SIZE)) > 0.85
    assert editing.iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    keep = np.ones((32, 32), bool)
    assert editing.masked_psnr(picture, picture, keep) == float("inf")
    noisy = picture.copy()
    noisy[0, 0, 0] ^= 16  # one value off by 16: mse = 256 / (32 * 32 * 3)
    assert editing.masked_psnr(noisy, picture, keep) == pytest.approx(10 * np.log10(255**2 * 3072 / 256))
    keep[0, 0] = False
    assert editing.masked_psnr(noisy, picture, keep) == float("inf")


def test_seam_counts_edges_the_target_lacks():
    """Synthetic pictures: a flat target with a box masked; a square object whose right half is masked."""
    a, b = np.array([200, 40, 40]), np.array([40, 40, 200])
    target = np.broadcast_to(a, (32, 32, 3)).astype(np.uint8)
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:16] = 1
    assert editing.seam(target, target, mask) == 0.0
    patched = target.copy()
    patched[8:24, 8:16] = b  # the masked box drawn in another colour: an edge all around it
    assert editing.seam(patched, target, mask) == pytest.approx(np.linalg.norm(a - b))
    assert editing.seam(patched, target, np.zeros((32, 32))) == 0.0  # no border, nothing to measure
    half = np.zeros((32, 32), np.float32)
    half[8:24, 16:24] = 1  # the right half of the object below
    whole = target.copy()
    whole[8:24, 8:24] = b  # the object drawn whole: its edges are the target's, no seam
    assert editing.seam(whole, whole, half) == 0.0
    cut = whole.copy()
    cut[8:24, 16:24] = a  # the masked half drawn as background: the object stops at the border
    # of the 48 pairs across the border (16 + 16 + 8 + 8), those of the left side jump, but for the
    # three rows next to the object's top edge and the three next to its bottom edge (tolerance 2)
    assert editing.seam(cut, whole, half) == pytest.approx(np.linalg.norm(a - b) * (16 - 6) / 48)
    moved = whole.copy()
    moved[8:26, 16:24] = a
    moved[10:26, 16:24] = b  # the masked half drawn two pixels low: a step of two rows at the border
    assert editing.seam(moved, whole, half) == 0.0  # forgiven within the tolerance
    # without it, the pair of row 9 counts (row 8's touches the target's own top edge)
    assert editing.seam(moved, whole, half, tolerance=0) == pytest.approx(np.linalg.norm(a - b) / 48)


@pytest.fixture(scope="module")
def inpaint_pipes():
    torch.set_num_threads(1)
    blend = StableDiffusionInpaintPipeline.from_pretrained(tiny_model_path(), device="cpu")
    nine = StableDiffusionInpaintPipeline.from_pretrained(tiny_model_path(), device="cpu")
    nine.unet = UNet2DConditionModel.from_pretrained(
        tiny_inpaint_unet_path(), dtype=torch.float32, device="cpu"
    )
    return blend, nine


def test_img2img_trades_adherence_for_layout():
    torch.set_num_threads(1)
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(tiny_model_path(), device="cpu")
    low, high = editing.recolour_sweep(pipe, (0.2, 1.0), num_tasks=16, num_inference_steps=10, progress=False)
    assert high["adherence"] >= 0.8 and high["adherence"] >= low["adherence"]
    assert low["iou"] > high["iou"] + 0.1


def test_inpainting_blend_and_nine_channel_bars(inpaint_pipes):
    """Measured on 16 held-out tasks with 10 steps: replacing an object, the 9-channel UNet draws it
    (1.0) and keeps the outside of the box better than the blend (38 vs 34 dB) with less of a seam
    (1.6 vs 2.6); completing half an object it keeps the other half less exactly than the blend
    (26.5 vs 30 dB; the 2,000-step plain-loss model: 24, the 600-step one: 19)."""
    blend, nine = (
        editing.evaluate_inpainting(p, "replace", num_tasks=16, num_inference_steps=10) for p in inpaint_pipes
    )
    assert nine["object"] >= 0.8 and nine["psnr"] >= 35 and nine["psnr"] > blend["psnr"] + 1
    assert blend["object"] >= 0.75 and blend["psnr"] >= 30
    assert nine["seam"] < blend["seam"]
    completed = editing.evaluate_inpainting(inpaint_pipes[1], "complete", 16, num_inference_steps=10)
    assert completed["object"] >= 0.75 and completed["psnr"] >= 25
