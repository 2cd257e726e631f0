"""Captioned shapes: a procedural text-to-image dataset (the reader that grades pictures is in reader.py).

Chapter 07 trains a tiny latent diffusion model on these scenes. Each scene is one or two
coloured shapes (circle, square, triangle) on a plain background, with a caption such as
"a red circle above a blue square on a yellow background". Scenes are deterministic functions of
a seed, drawn on the fly. A few colour-shape combinations (`HELD_OUT`) never appear in training,
so prompt adherence can be measured on captions the model has never seen.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np
import torch

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 215, 40),
    "purple": (150, 60, 200),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
# A colour the tiny model never sees in training: the new concept that a LoRA and a learned word
# embedding (textual inversion, chapter 08) try to teach it; the reader knows it, so it is graded.
NOVEL_COLORS: dict[str, tuple[int, int, int]] = {"cyan": (40, 210, 220)}
PALETTE = {**COLORS, **NOVEL_COLORS}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("above", "below", "left of", "right of")
NUMBERS = {1: "a", 2: "two"}
# Colour-shape pairs never drawn in training: the held-out test of compositional generalisation.
HELD_OUT = {
    ("red", "triangle"),
    ("green", "circle"),
    ("blue", "square"),
    ("yellow", "triangle"),
    ("purple", "circle"),
}


@dataclass(frozen=True)
class Shape:
    color: str
    shape: str
    cx: float  # centre, as a fraction of the image side
    cy: float
    size: float  # side of the bounding box, as a fraction of the image side


@dataclass(frozen=True)
class ShapeScene:
    background: str
    shapes: tuple[Shape, ...]
    relation: str | None = None  # how shapes[0] sits relative to shapes[1]

    @property
    def caption(self) -> str:
        bg = f"on a {self.background} background"
        a = self.shapes[0]
        if len(self.shapes) == 1:
            return f"a {a.color} {a.shape} {bg}"
        b = self.shapes[1]
        if self.relation is None:  # two of the same kind
            return f"two {a.color} {a.shape}s {bg}"
        return f"a {a.color} {a.shape} {self.relation} a {b.color} {b.shape} {bg}"

    def object_words(self) -> list[tuple[int, tuple[int, ...]]]:
        """(index of the word in caption.split(), the shapes it names) for each colour and shape word."""
        if self.relation is None:  # "a red circle on ..." or "two red circles on ..."
            both = tuple(range(len(self.shapes)))
            return [(1, both), (2, both)]
        r = len(self.relation.split())  # "a red circle left of a blue square on ..."
        return [(1, (0,)), (2, (0,)), (4 + r, (1,)), (5 + r, (1,))]

    def relation_words(self) -> list[tuple[int, tuple[int, ...]]]:
        """(index in caption.split(), (0,)) for each word of the relation: in a causal text encoder
        "above" has read "a red circle above", so it can say where the first object goes."""
        if self.relation is None:
            return []
        return [(3 + i, (0,)) for i in range(len(self.relation.split()))]

    def is_held_out(self) -> bool:
        return any((s.color, s.shape) in HELD_OUT for s in self.shapes)


def _pick_object(rng: random.Random, background: str, held_out: bool) -> tuple[str, str]:
    while True:
        color, shape = rng.choice([c for c in COLORS if c != background]), rng.choice(SHAPES)
        if ((color, shape) in HELD_OUT) == held_out:
            return color, shape


def _single(rng: random.Random, background: str, color: str, shape: str) -> ShapeScene:
    size = rng.uniform(0.4, 0.6)
    c = (rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65))
    return ShapeScene(background, (Shape(color, shape, *c, size),))


def novel_scene(rng: random.Random, color: str = "cyan") -> ShapeScene:
    """One object of `color` (by default the novel cyan; any PALETTE colour) on another colour of
    COLORS, placed as single objects are."""
    if color not in PALETTE:
        raise ValueError(f"{color!r} is not a colour of the shapes world; choose one of {sorted(PALETTE)}")
    return _single(rng, rng.choice([c for c in COLORS if c != color]), color, rng.choice(SHAPES))


def random_scene(rng: random.Random, held_out: bool = False) -> ShapeScene:
    """One scene: 40% a single shape, 20% two alike, 40% two shapes in a spatial relation.

    With `held_out=True` the (first) object is one of the HELD_OUT pairs; otherwise none is.
    """
    background = rng.choice(list(COLORS))
    kind = rng.random()
    if kind < 0.4:
        return _single(rng, background, *_pick_object(rng, background, held_out))
    size = rng.uniform(0.3, 0.38)
    lo, hi = 0.25, 0.75  # two slots on one axis, jittered on the other
    jitter = (rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58))
    if kind < 0.6:
        color, shape = _pick_object(rng, background, held_out)
        horizontal = rng.random() < 0.5
        pos = [(lo, jitter[0]), (hi, jitter[1])] if horizontal else [(jitter[0], lo), (jitter[1], hi)]
        return ShapeScene(background, tuple(Shape(color, shape, x, y, size) for x, y in pos))
    first = _pick_object(rng, background, held_out)
    while (second := _pick_object(rng, background, False)) == first:
        pass
    relation = rng.choice(RELATIONS)
    ja, jb = jitter
    a, b = {
        "above": ((ja, lo), (jb, hi)),
        "below": ((ja, hi), (jb, lo)),
        "left of": ((lo, ja), (hi, jb)),
        "right of": ((hi, ja), (lo, jb)),
    }[relation]
    shapes = (Shape(*first, *a, size), Shape(*second, *b, size))
    return ShapeScene(background, shapes, relation)


# every word of every training caption: the tiny model has learned nothing about any other word
VOCABULARY = frozenset(
    [*NUMBERS.values(), "on", "background", *COLORS, *SHAPES, *(f"{s}s" for s in SHAPES)]
    + [w for r in RELATIONS for w in r.split()]
)


def unknown_words(prompt: str) -> list[str]:
    """The words of `prompt` that no training caption of the shapes world contains, in order."""
    words = re.findall(r"\w+", prompt.lower())
    return list(dict.fromkeys(w for w in words if w not in VOCABULARY))


REVERSED = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


def reversed_relation(scene: ShapeScene) -> ShapeScene:
    """The same objects in the same places, captioned with the opposite relation word: the control
    for a model that ignores word order ("a red circle above a blue square" -> "... below ...")."""
    if scene.relation is None:
        raise ValueError(f"{scene.caption!r} has no relation word to reverse")
    return ShapeScene(scene.background, scene.shapes, REVERSED[scene.relation])


def shape_mask(shape: Shape, n: int) -> np.ndarray:
    """Boolean [n, n] mask of one shape on an n x n grid (pixel centres)."""
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n
    dx, dy, r = x - shape.cx, y - shape.cy, shape.size / 2
    if shape.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape.shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    # an isosceles triangle pointing up, filling its bounding box's lower half area
    return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)


def shape_coverage(shape: Shape, n: int, supersample: int = 4) -> np.ndarray:
    """How much of each cell of an n x n grid the shape covers: float [n, n] in [0, 1]."""
    fine = shape_mask(shape, n * supersample).reshape(n, supersample, n, supersample)
    return fine.mean(axis=(1, 3))


def render_scene(scene: ShapeScene, size: int = 32, supersample: int = 4) -> np.ndarray:
    """Draw a scene as uint8 [size, size, 3], anti-aliased by drawing `supersample` x larger."""
    n = size * supersample
    img = np.empty((n, n, 3), np.float32)
    img[:] = PALETTE[scene.background]
    for s in scene.shapes:
        img[shape_mask(s, n)] = PALETTE[s.color]
    img = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return img.round().astype(np.uint8)


class ShapesDataset(torch.utils.data.Dataset):
    """`length` scenes drawn from `seed`: item i is (image [3, size, size] in [-1, 1], caption).

    split="train" never draws a HELD_OUT colour-shape pair; split="heldout" always draws one.
    """

    def __init__(self, length: int = 10_000, size: int = 32, seed: int = 0, split: str = "train"):
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        self.length, self.size, self.seed, self.split = length, size, seed, split

    def __len__(self) -> int:
        return self.length

    def scene(self, i: int) -> ShapeScene:
        if not 0 <= i < self.length:
            raise IndexError(i)
        return random_scene(random.Random(self.seed * 1_000_003 + i), held_out=self.split == "heldout")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        scene = self.scene(i)
        img = torch.from_numpy(render_scene(scene, self.size)).permute(2, 0, 1).float() / 127.5 - 1
        return img, scene.caption
