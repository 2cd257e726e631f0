"""Procedural datasets (chapter 07): captioned shapes drawn on the fly."""

from minisd.data.shapes import ShapeScene, ShapesDataset, read_scene, render_scene, score_image

__all__ = ["ShapeScene", "ShapesDataset", "read_scene", "render_scene", "score_image"]
