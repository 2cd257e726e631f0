"""Reading a picture of the shapes world back into words: background, colours, shapes and count.

The scorer that tells whether a generated picture shows its caption (chapter 07).
"""

from __future__ import annotations

import numpy as np

from minisd.shapes.scenes import PALETTE, ShapeScene


def _nearest_color(img: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] index into PALETTE of the nearest palette colour (of those `among`)."""
    among = np.arange(len(PALETTE)) if among is None else among
    palette = np.array(list(PALETTE.values()), np.float32)[among]  # [K, 3]
    d = ((img[:, :, None, :].astype(np.float32) - palette) ** 2).sum(-1)  # [H, W, K]
    return among[d.argmin(-1)]


def _components(mask: np.ndarray) -> np.ndarray:
    """4-connected labels of a boolean [H, W] mask (0 = background), by min-label propagation."""
    h, w = mask.shape
    big = h * w + 1
    labels = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), big)
    while True:
        padded = np.pad(labels, 1, constant_values=big)
        neighbours = np.stack(
            [padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
        )
        new = np.where(mask, neighbours.min(0), big)
        if (new == labels).all():
            return np.where(mask, labels, 0)
        labels = new


def classify_shape(region: np.ndarray) -> str:
    """Name the shape of a boolean [H, W] region by where its pixels sit in its bounding box.

    A triangle (pointing up) fills the bottom corners of its box and not the top ones, and its
    centre of mass sits a sixth of its height below the box's middle; circles and squares are
    symmetric. A square fills all four corners, a circle none. These tests survive the soft edges
    and blunted tips of a generated picture, unlike an exact area ratio.
    """
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = region[y0:y1, x0:x1]
    k = max(1, round(min(box.shape) / 4))  # corner squares a quarter of the side wide
    top = (box[:k, :k].mean() + box[:k, -k:].mean()) / 2
    bottom = (box[-k:, :k].mean() + box[-k:, -k:].mean()) / 2
    offset = (ys.mean() + 0.5 - (y0 + y1) / 2) / (y1 - y0)  # centre of mass below the middle
    if bottom - top > 0.35 or offset > 0.045:
        return "triangle"
    return "square" if (top + bottom) / 2 > 0.55 else "circle"


def foreground_mask(image: np.ndarray, min_pixels: int = 12) -> np.ndarray:
    """Boolean [H, W]: where the objects of a uint8 [H, W, 3] picture are, read back from it.

    Each pixel takes the nearest of the picture's own colours (the palette colours nearest to at
    least `min_pixels` pixels), so the blend on an edge goes to the side it is closer to, not to a
    third colour; the mask is every pixel not of the background (the most common colour).
    """
    counts = np.bincount(_nearest_color(image).ravel(), minlength=len(PALETTE))
    idx = _nearest_color(image, np.flatnonzero(counts >= min(min_pixels, counts.max())))
    return idx != counts.argmax()


def read_scene(image: np.ndarray, min_pixels: int = 12) -> dict:
    """Read a uint8 [H, W, 3] picture back: background colour and each object's colour, shape and place.

    Returns {"background": name, "objects": [{"color", "shape", "pixels", "cx", "cy"}...]} with the
    objects sorted by size (largest first) and their centres as fractions of the side (y grows
    downwards); regions smaller than `min_pixels` are ignored as noise.
    """
    names = list(PALETTE)
    idx = _nearest_color(image)
    background = np.bincount(idx.ravel(), minlength=len(names)).argmax()
    labels = _components(idx != background)
    objects = []
    for lab in np.unique(labels[labels > 0]):
        region = labels == lab
        n = int(region.sum())
        if n < min_pixels:
            continue
        color = names[np.bincount(idx[region], minlength=len(names)).argmax()]
        ys, xs = np.nonzero(region)
        cx, cy = (xs.mean() + 0.5) / image.shape[1], (ys.mean() + 0.5) / image.shape[0]
        objects.append({"color": color, "shape": classify_shape(region), "pixels": n, "cx": cx, "cy": cy})
    objects.sort(key=lambda o: -o["pixels"])
    return {"background": names[background], "objects": objects}


def relation_between(a: dict, b: dict) -> str:
    """Where object `a` sits relative to `b` ("above", "below", "left of", "right of"), from their
    centres: along the axis on which they are further apart."""
    dx, dy = a["cx"] - b["cx"], a["cy"] - b["cy"]
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "left of" if dx < 0 else "right of"


def scene_kind(scene: ShapeScene) -> str:
    """ "single", "two alike" or "relation": the three kinds of caption."""
    if len(scene.shapes) == 1:
        return "single"
    return "two alike" if scene.relation is None else "relation"


def _find(objects: list[dict], color: str, shape: str) -> dict | None:
    """The largest object of this colour and shape, else the largest of this colour, else None."""
    exact = [o for o in objects if o["color"] == color and o["shape"] == shape]
    return (exact or [o for o in objects if o["color"] == color] or [None])[0]


def score_image(image: np.ndarray, scene: ShapeScene) -> dict[str, bool]:
    """Grade a generated picture against the whole caption of its scene.

    Always: "color" and "shape" (of the first object named), "background", "count" (as many objects
    as named). Two-object scenes add "second" (the second object named, colour and shape, found
    apart from the first); relation scenes add "relation" (both objects found and placed as the
    relation word says, read from their centres).
    """
    seen = read_scene(image)
    first, *rest = scene.shapes
    match = [o for o in seen["objects"] if o["color"] == first.color]
    scores = {
        "color": bool(match),
        "shape": any(o["shape"] == first.shape for o in match),
        "background": seen["background"] == scene.background,
        "count": len(seen["objects"]) == len(scene.shapes),
    }
    if rest:
        a = _find(seen["objects"], first.color, first.shape)
        others = [o for o in seen["objects"] if o is not a]
        b = _find(others, rest[0].color, rest[0].shape)
        scores["second"] = b is not None and (b["color"], b["shape"]) == (rest[0].color, rest[0].shape)
        if scene.relation is not None:
            found = (
                a is not None and (a["color"], a["shape"]) == (first.color, first.shape) and scores["second"]
            )
            scores["relation"] = found and relation_between(a, b) == scene.relation
    return scores
