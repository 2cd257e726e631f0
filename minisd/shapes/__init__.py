"""The shapes world: the book's laboratory (chapter 07). Procedural scenes of coloured shapes with
their captions, a reader that scores a picture against its caption, and the tiny model trained on it."""

from minisd.shapes.reader import classify_shape, read_scene, relation_between, scene_kind, score_image
from minisd.shapes.scenes import (
    COLORS,
    HELD_OUT,
    NOVEL_COLORS,
    NUMBERS,
    PALETTE,
    RELATIONS,
    REVERSED,
    SHAPES,
    Shape,
    ShapeScene,
    ShapesDataset,
    novel_scene,
    random_scene,
    render_scene,
    reversed_relation,
    shape_coverage,
    shape_mask,
)
from minisd.shapes.tiny import TINY_CONFIGS, TINY_MODEL, TINY_SAMPLING, tiny_model_path

__all__ = [
    "COLORS",
    "HELD_OUT",
    "NOVEL_COLORS",
    "NUMBERS",
    "PALETTE",
    "RELATIONS",
    "REVERSED",
    "SHAPES",
    "TINY_CONFIGS",
    "TINY_MODEL",
    "TINY_SAMPLING",
    "Shape",
    "ShapeScene",
    "ShapesDataset",
    "classify_shape",
    "novel_scene",
    "random_scene",
    "read_scene",
    "relation_between",
    "render_scene",
    "reversed_relation",
    "scene_kind",
    "score_image",
    "shape_coverage",
    "shape_mask",
    "tiny_model_path",
]
