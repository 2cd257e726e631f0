"""Tiled VAE: encode or decode a large picture in overlapping tiles, blending the seams (chapter 05).

Memory then grows with the tile, not the picture; the overlap is blended linearly so no seam shows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def blend_seam(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """Cross-fade the first `extent` rows (dim=2) or columns (dim=3) of tile `b` with the last of `a`.

    The weight of `b` ramps linearly 0, 1/extent, ..., (extent-1)/extent, as in diffusers.
    """
    extent = min(a.shape[dim], b.shape[dim], extent)
    if extent == 0:
        return b
    shape = [1, 1, 1, 1]
    shape[dim] = extent
    w = (torch.arange(extent, device=b.device, dtype=torch.float32) / extent).view(shape).to(b.dtype)
    b = b.clone()
    head = b.narrow(dim, 0, extent)
    head.copy_(a.narrow(dim, a.shape[dim] - extent, extent) * (1 - w) + head * w)
    return b


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, out_tile: int, overlap: float
) -> torch.Tensor:
    """Run `fn` on overlapping `tile`-sized crops of x and stitch the outputs with blended seams.

    Tiles start every tile*(1-overlap) input pixels; each output tile (side `out_tile` when whole)
    is cross-faded over out_tile*overlap pixels with its upper and left neighbours, then cropped
    to out_tile*(1-overlap) (diffusers' tiled_encode / tiled_decode).
    """
    stride = int(tile * (1 - overlap))
    extent = int(out_tile * overlap)
    keep = out_tile - extent
    rows = [
        [fn(x[:, :, i : i + tile, j : j + tile]) for j in range(0, x.shape[3], stride)]
        for i in range(0, x.shape[2], stride)
    ]
    out_rows = []
    for i, row in enumerate(rows):
        out_row = []
        for j, t in enumerate(row):
            if i > 0:
                t = blend_seam(rows[i - 1][j], t, extent, dim=2)
            if j > 0:
                t = blend_seam(row[j - 1], t, extent, dim=3)
            row[j] = t
            out_row.append(t[:, :, :keep, :keep])
        out_rows.append(torch.cat(out_row, dim=3))
    return torch.cat(out_rows, dim=2)
