"""The Canny edge detector in torch: the condition image of the most used ControlNet (chapter 11).

Canny (1986) in four steps, each a whole-image tensor operation: a Gaussian blur against noise;
Sobel gradients (magnitude and direction); non-maximum suppression, which keeps a pixel only where
its magnitude peaks across the edge, so edges are one pixel thin; and a double threshold with
hysteresis: pixels above `high_threshold` are edges, pixels above `low_threshold` are edges when a
chain of such pixels connects them to a strong one (grown by repeated 3x3 dilation).
Thresholds are on the scale of 0-255 intensities, as OpenCV's `cv2.Canny(image, 100, 200)`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights of R, G, B: PIL's and OpenCV's grey


def to_gray(image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
    """PIL, uint8 array [H, W(, 3)] or float tensor [(B,) C, H, W] in [0, 1] -> grey [B, 1, H, W] in 0-255."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        x = torch.from_numpy(np.asarray(image, np.float32))
        x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]  # [1, C, H, W]
    else:
        x = image.float()[None] if image.ndim == 3 else image.float()
        x = x * 255.0
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected a grey or RGB picture, got shape {tuple(x.shape)}")
    if x.shape[1] == 3:
        x = sum(w * x[:, i : i + 1] for i, w in enumerate(LUMA))
    return x


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """[B, 1, H, W] blurred by a Gaussian of std `sigma` pixels (radius 3 sigma), mirrored at the border."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))  # along rows
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))  # columns


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Sobel derivatives (d/dx, d/dy) of [B, 1, H, W] (y grows downwards), mirrored at the border."""
    smooth, diff = torch.tensor([1.0, 2.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0])
    kx = (smooth[:, None] * diff[None, :]).to(x.dtype)  # [3, 3]: difference along x, smoothing along y
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kx.view(1, 1, 3, 3)), F.conv2d(padded, kx.T.reshape(1, 1, 3, 3))


# the neighbour offsets (dy, dx) across the edge for the four gradient directions 0, 45, 90, 135 degrees
ACROSS = ((0, 1), (1, 1), (1, 0), (1, -1))


def non_maximum_suppression(magnitude: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Keep [B, 1, H, W] magnitudes that peak along the gradient direction (rounded to 45 degrees), zero
    the rest. A tie with the neighbour behind is kept and one with the neighbour ahead is not, so a
    symmetric two-pixel ridge keeps one pixel, as OpenCV does (compared at 1e-6, so that rounding
    errors of the blur do not decide ties: `canny` computes in float64)."""
    level = torch.round(magnitude * 1e6)
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180  # the gradient's direction, modulo a half turn
    sector = ((angle + 22.5) // 45).long() % 4  # 0: horizontal gradient (a vertical edge), 2: vertical
    padded = F.pad(level, (1, 1, 1, 1))
    h, w = magnitude.shape[-2:]
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for i, (dy, dx) in enumerate(ACROSS):
        ahead = padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        behind = padded[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        keep |= (sector == i) & (level > ahead) & (level >= behind)
    return magnitude * keep


def hysteresis(strong: torch.Tensor, weak: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, H, W]: the strong pixels and every weak pixel 8-connected to one through weak pixels,
    grown by repeated 3x3 dilation until nothing changes."""
    edges = strong & weak
    while True:
        grown = weak & (F.max_pool2d(edges.float(), 3, stride=1, padding=1) > 0)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def canny(
    image: Image.Image | np.ndarray | torch.Tensor,
    low_threshold: float = 100.0,
    high_threshold: float = 200.0,
    sigma: float = 1.0,
) -> torch.Tensor:
    """Edges of a picture (see `to_gray` for the inputs): float [B, 1, H, W], 1 on an edge, else 0.

    `sigma` is the blur's std in pixels (0: no blur); gradient magnitudes are sqrt(gx^2 + gy^2) of
    the 0-255 grey picture, compared with the two thresholds (`low_threshold` <= `high_threshold`).
    For a ControlNet condition repeat the channel: `canny(photo).expand(-1, 3, -1, -1)`.
    """
    if not 0 <= low_threshold <= high_threshold:
        raise ValueError(f"need 0 <= low_threshold <= high_threshold, got {low_threshold}, {high_threshold}")
    x = to_gray(image).double()
    if sigma > 0:
        x = gaussian_blur(x, sigma)
    gx, gy = sobel(x)
    thin = non_maximum_suppression(torch.hypot(gx, gy), gx, gy)
    return hysteresis(thin >= high_threshold, thin >= low_threshold).float()
