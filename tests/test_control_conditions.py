"""ControlNet conditions: the Canny detector (against scipy where it has the step, on pictures whose edges
are known exactly where it has not) and the shapes world's masks and outlines."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from minisd.pipelines.canny import canny, gaussian_blur, hysteresis, non_maximum_suppression, sobel, to_gray
from minisd.shapes import (
    Shape,
    ShapeScene,
    condition_image,
    foreground_mask,
    free_layout,
    object_mask,
    outline,
    random_scene,
    render_scene,
)


def _noise(seed=0, shape=(1, 1, 24, 31)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 255


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_blur_equals_scipy(sigma):
    x = _noise()
    ours = gaussian_blur(x, sigma)[0, 0].numpy()
    ref = ndimage.gaussian_filter(x[0, 0].numpy(), sigma, mode="mirror", truncate=3.0)
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_sobel_equals_scipy():
    x = _noise(1)
    gx, gy = sobel(x)
    image = x[0, 0].numpy()
    np.testing.assert_allclose(gx[0, 0].numpy(), ndimage.sobel(image, axis=1, mode="mirror"), atol=1e-9)
    np.testing.assert_allclose(gy[0, 0].numpy(), ndimage.sobel(image, axis=0, mode="mirror"), atol=1e-9)


def test_gray_uses_luma_for_every_input_kind():
    rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"), np.float32)  # PIL's own grey, rounded
    for image in (rgb, Image.fromarray(rgb), torch.from_numpy(rgb).permute(2, 0, 1).float() / 255):
        np.testing.assert_allclose(to_gray(image)[0, 0].numpy(), expected, atol=0.51)


def _square(lo=8, hi=24, n=32, value=255):
    img = np.zeros((n, n), np.uint8)
    img[lo:hi, lo:hi] = value
    return img


def test_a_filled_square_gives_its_border_and_nothing_else():
    lo, hi = 8, 24
    edges = canny(_square(lo, hi))[0, 0].bool().numpy()
    near = np.zeros_like(edges)  # pixels within one of the true border (between lo - 1 | lo, hi - 1 | hi)
    near[lo - 1 : hi + 1, lo - 1 : hi + 1] = True
    near[lo + 1 : hi - 1, lo + 1 : hi - 1] = False
    assert edges.any() and not (edges & ~near).any()
    for k in range(lo + 3, hi - 3):  # away from the corners each side is exactly one pixel thick
        assert edges[k, lo - 1 : lo + 1].sum() == 1 and edges[k, hi - 1 : hi + 1].sum() == 1
        assert edges[lo - 1 : lo + 1, k].sum() == 1 and edges[hi - 1 : hi + 1, k].sum() == 1


@pytest.mark.parametrize("angle", [0, 30, 45, 60, 90, 120])
def test_a_straight_step_edge_is_one_pixel_thin(angle):
    n = 40
    y, x = np.mgrid[0:n, 0:n] - n / 2 + 0.5
    a = np.deg2rad(angle)
    img = ((x * np.cos(a) + y * np.sin(a)) > 0.3).astype(np.uint8) * 255
    edges = canny(img)[0, 0].bool().numpy()[4:-4, 4:-4]  # away from the picture's own border
    # thin: no 2x2 block of edge pixels; whole: the line crosses the crop
    blocks = edges[:-1, :-1] & edges[1:, :-1] & edges[:-1, 1:] & edges[1:, 1:]
    assert not blocks.any()
    along = edges.any(axis=1) if abs(np.cos(a)) >= abs(np.sin(a)) else edges.any(axis=0)
    assert along.all()


def test_non_maximum_suppression_keeps_the_ridge_only():
    magnitude = torch.tensor([[0.0, 1.0, 3.0, 5.0, 3.0, 1.0, 0.0]], dtype=torch.float64).repeat(5, 1)[
        None, None
    ]
    gx, gy = torch.ones_like(magnitude), torch.zeros_like(magnitude)  # the gradient points along x
    kept = non_maximum_suppression(magnitude, gx, gy)[0, 0]
    assert kept[:, 3].eq(5).all() and kept.count_nonzero() == 5
    # pointing along y instead, each column is a plateau: a tie keeps only its last pixel (as OpenCV)
    across = non_maximum_suppression(magnitude, gy, gx)[0, 0]
    assert torch.equal(across[-1], magnitude[0, 0, -1]) and not across[:-1].any()


def test_hysteresis_keeps_weak_pixels_connected_to_strong_ones():
    weak = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    weak[0, 0, 1, 1:8] = True  # a chain of weak pixels ...
    weak[0, 0, 5, 2:5] = True  # ... and an isolated weak segment
    weak[0, 0, 2, 8] = True  # diagonal neighbour of the chain's end: 8-connected
    strong = torch.zeros_like(weak)
    strong[0, 0, 1, 1] = True  # one strong pixel at the chain's start
    edges = hysteresis(strong, weak)[0, 0]
    assert edges[1, 1:8].all() and edges[2, 8] and not edges[5].any()


def test_thresholds_decide_which_edges_survive():
    img = _square(value=60)  # a faint square: the step is 60 grey levels
    peak = float(
        non_maximum_suppression(
            *(lambda gx, gy: (torch.hypot(gx, gy), gx, gy))(*sobel(gaussian_blur(to_gray(img).double(), 1.0)))
        ).max()
    )
    assert canny(img, 0.5 * peak, 0.9 * peak).any()
    assert not canny(img, 0.5 * peak, 1.01 * peak).any()  # no strong pixel: nothing at all
    counts = [int(canny(img, low, 0.9 * peak).sum()) for low in (0.2 * peak, 0.6 * peak, 0.85 * peak)]
    assert counts == sorted(counts, reverse=True)  # a higher low threshold never adds edges
    with pytest.raises(ValueError, match="low_threshold"):
        canny(img, 200, 100)


def test_object_mask_and_outline_of_a_square():
    scene = ShapeScene("red", (Shape("blue", "square", 0.5, 0.5, 0.5),))
    mask = object_mask(scene, 32)
    assert mask.sum() == 16 * 16 and mask[8:24, 8:24].all()
    line = outline(scene, 32)
    assert line.sum() == 4 * 15 and line[8, 8:24].all() and not line[9:23, 9:23].any()
    image = condition_image(scene, "outline")
    assert image.shape == (3, 32, 32) and torch.equal(image[1], torch.from_numpy(line).float())
    with pytest.raises(ValueError, match="kind"):
        condition_image(scene, "depth")


def test_the_reader_finds_the_mask_in_a_rendered_scene():
    """The ceiling of control adherence: a perfect picture reads back as its mask, up to the pixels that
    an object covers by half exactly (the anti-aliased blend decides those)."""
    rng = random.Random(0)
    ious = []
    for _ in range(100):
        scene = free_layout(random_scene(rng), rng)
        mask, seen = object_mask(scene), foreground_mask(render_scene(scene))
        ious.append((mask & seen).sum() / (mask | seen).sum())
    assert np.mean(ious) > 0.95 and min(ious) > 0.7


def test_free_layout_moves_single_objects_inside_the_picture():
    rng = random.Random(1)
    scenes = [random_scene(rng) for _ in range(200)]
    moved = [free_layout(s, rng) for s in scenes]
    for before, after in zip(scenes, moved, strict=True):
        if len(before.shapes) == 2:
            assert after == before
        else:
            s = after.shapes[0]
            assert after.caption == before.caption and 0.25 <= s.size <= 0.6
            assert s.size / 2 <= s.cx <= 1 - s.size / 2 and s.size / 2 <= s.cy <= 1 - s.size / 2
    corners = [s for s in moved if len(s.shapes) == 1 and min(s.shapes[0].cx, s.shapes[0].cy) < 0.3]
    assert corners  # places the text-to-image data never uses
