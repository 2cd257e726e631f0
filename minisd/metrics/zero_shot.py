"""Zero-shot classification of shapes scenes with a CLIP model.

To ask CLIP "which colour is the first object?", write the scene's caption once per colour and
pick the caption whose features lie closest to the picture's. The same for the shape, the
background and (for two-object scenes) the relation; each accuracy is the fraction of scenes whose
true caption wins. Chance is 1/6 for a colour or background, 1/3 for a shape, 1/4 for a relation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from minisd.metrics.clip_score import clip_preprocess
from minisd.models.tokenizer import CLIPTokenizer
from minisd.shapes import COLORS, RELATIONS, SHAPES, ShapeScene, ShapesDataset, render_scene

ATTRIBUTES = ("color", "shape", "background", "relation")


def candidate_scenes(scene: ShapeScene, attribute: str) -> list[ShapeScene]:
    """The scene with `attribute` set to each possible value (the true one among them); empty when
    the attribute does not apply (a relation of a scene without one). The first object is asked
    about ("two red circles" change together)."""
    if attribute == "relation":
        return [dataclasses.replace(scene, relation=r) for r in RELATIONS] if scene.relation else []
    if attribute == "background":
        taken = {s.color for s in scene.shapes}
        return [dataclasses.replace(scene, background=c) for c in COLORS if c not in taken]
    field, values = {"color": ("color", COLORS), "shape": ("shape", SHAPES)}[attribute]
    first, rest = scene.shapes[0], scene.shapes[1:]
    alike = scene.relation is None  # "two red circles": both shapes are the one named
    out = []
    for v in values:
        if field == "color" and v == scene.background:
            continue
        changed = dataclasses.replace(first, **{field: v})
        others = tuple(dataclasses.replace(s, **{field: v}) for s in rest) if alike else rest
        out.append(dataclasses.replace(scene, shapes=(changed, *others)))
    return out


@torch.no_grad()
def zero_shot_accuracy(
    clip_model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    scenes: Sequence[ShapeScene],
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    size: int = 32,
) -> dict[str, tuple[float, int]]:
    """Per attribute: (accuracy, number of scenes it applies to) of picking the true caption.

    `preprocess` maps rendered pictures [B, 3, size, size] in [0, 1] to the model's pixel_values
    (e.g. `lambda x: clip_preprocess(x, 32)`).
    """
    device = next(clip_model.parameters()).device
    pictures = torch.stack([torch.from_numpy(render_scene(s, size)).permute(2, 0, 1) for s in scenes]) / 255
    image = F.normalize(clip_model.get_image_features(preprocess(pictures).to(device)).pooler_output, dim=-1)
    asked = {a: [[c.caption for c in candidate_scenes(s, a)] for s in scenes] for a in ATTRIBUTES}
    unique = sorted({c for rows in asked.values() for row in rows for c in row})
    text = torch.cat(
        [
            clip_model.get_text_features(tokenizer(unique[i : i + 256]).to(device)).pooler_output
            for i in range(0, len(unique), 256)
        ]
    )
    text = dict(zip(unique, F.normalize(text, dim=-1), strict=True))  # caption -> [P]
    result = {}
    for attribute, rows in asked.items():
        wins = [
            row[torch.stack([text[c] for c in row]).matmul(features).argmax().item()] == scene.caption
            for scene, features, row in zip(scenes, image, rows, strict=True)
            if row
        ]
        result[attribute] = (sum(wins) / len(wins) if wins else float("nan"), len(wins))
    return result


def shapes_zero_shot(
    clip_model: torch.nn.Module, num_scenes: int = 500, seed: int = 1
) -> dict[str, dict[str, tuple[float, int]]]:
    """Zero-shot accuracy of a shapes-world CLIP (the tiny one, `minisd.training.clip`) on
    `num_scenes` scenes of each split: "heldout" (the first object is a HELD_OUT colour-shape pair,
    never seen in training) and "train" (only pairs seen in training), per attribute."""
    tokenizer, size = CLIPTokenizer(), clip_model.vision_model.embeddings.image_size
    return {
        split: zero_shot_accuracy(
            clip_model,
            tokenizer,
            [data.scene(i) for i in range(num_scenes)],
            lambda x: clip_preprocess(x, size),
            size,
        )
        for split in ("heldout", "train")
        for data in [ShapesDataset(num_scenes, seed=seed, split=split)]
    }


def format_zero_shot(result: dict[str, dict[str, tuple[float, int]]]) -> str:
    """`shapes_zero_shot`'s result as a small table: one row per split, one column per attribute."""
    lines = ["scenes        " + "  ".join(f"{a:>10}" for a in ATTRIBUTES)]
    for split, accuracies in result.items():
        label = {"heldout": "held-out pairs", "train": "training pairs"}.get(split, split)
        lines.append(f"{label:14}" + "  ".join(f"{accuracies[a][0]:10.1%}" for a in ATTRIBUTES))
    return "\n".join(lines)
