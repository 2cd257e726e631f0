"""Pictures for the chapters: tensors to images, image grids, heat maps.

Every chapter draws through these helpers so images look alike across the book and stay small
enough for a committed notebook (images are downscaled to `max_side`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from minisd.pipelines.image_processing import to_pil


def image_grid(
    images: list[Image.Image], cols: int | None = None, max_side: int = 1024, zoom: int = 1
) -> Image.Image:
    """Paste equally sized images into one grid image, downscaled so its longer side is <= max_side;
    `zoom` > 1 first enlarges small pictures with visible pixels (nearest neighbour)."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        grid.paste(im.convert("RGB"), ((i % cols) * w, (i // cols) * h))
    if zoom > 1:
        grid = grid.resize((grid.width * zoom, grid.height * zoom), Image.NEAREST)
    scale = max_side / max(grid.size)
    if scale < 1:
        grid = grid.resize((round(grid.width * scale), round(grid.height * scale)), Image.LANCZOS)
    return grid


def show_images(images, titles: list[str] | None = None, cols: int | None = None, size: float = 2.0):
    """Draw images (PIL, or tensors for `to_pil`) in a matplotlib row/grid with optional titles."""
    import matplotlib.pyplot as plt

    if isinstance(images, (torch.Tensor, np.ndarray)):
        images = to_pil(images)
    cols = cols or len(images)
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, im in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(im, cmap="gray" if getattr(im, "mode", "RGB") == "L" else None, interpolation="nearest")
        if titles:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def show_jpeg(image: Image.Image, quality: int = 85, max_side: int = 768):
    """Display a PIL image in a notebook as JPEG (chapter 06): noise-like pictures from random
    weights stay small in a committed notebook, where PNG would take megabytes."""
    import io

    from IPython.display import Image as IPythonImage
    from IPython.display import display

    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    display(IPythonImage(data=buffer.getvalue(), format="jpeg"))


def source_excerpt(obj, first: str, last: str) -> str:
    """The lines of `obj`'s source from the first one containing `first` through the next one containing
    `last`, dedented, under a comment naming the file and line numbers; a ValueError if either is gone."""
    import inspect
    import textwrap

    obj = inspect.unwrap(obj)  # a decorated __init__: the file is the function's, not the decorator's
    lines, start = inspect.getsourcelines(obj)
    begin = next((i for i, line in enumerate(lines) if first in line), None)
    end = next((i for i in range(begin or 0, len(lines)) if last in lines[i]), None)
    if begin is None or end is None:
        raise ValueError(f"{obj.__qualname__} has no lines from {first!r} to {last!r}: update the excerpt")
    path = inspect.getsourcefile(obj).replace("\\", "/").rsplit("/minisd/", 1)[-1]
    header = f"# minisd/{path}, lines {start + begin}-{start + end} ({obj.__qualname__})\n"
    return header + textwrap.dedent("".join(lines[begin : end + 1]))


def show_source_excerpt(obj, first: str, last: str) -> None:
    """Display `source_excerpt(obj, first, last)` syntax-highlighted in a notebook."""
    from IPython.display import Code, display

    display(Code(source_excerpt(obj, first, last), language="python"))
