"""A miniature DrawBench for the shapes world: a fixed list of prompts by category,
each drawn several times and scored automatically, by the shapes reader (did the picture do what the
caption says?) and by a CLIP model (CLIP score).

DrawBench (Saharia et al., 2022, the Imagen paper) is 200 prompts in 11 categories, judged by people.
Here every category tests one thing the earlier chapters measured: colours and shapes the model saw
together, counts, spatial relations, and colour-shape pairs held out of its training.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from minisd.metrics.clip_score import clip_preprocess, clip_score
from minisd.models.tokenizer import CLIPTokenizer
from minisd.shapes import Shape, ShapeScene, score_image

# Where the objects sit: drawn where the caption says, so that each scene is a correct picture of it.
_PLACES = {
    None: ((0.28, 0.5), (0.72, 0.5)),
    "left of": ((0.28, 0.5), (0.72, 0.5)),
    "right of": ((0.72, 0.5), (0.28, 0.5)),
    "above": ((0.5, 0.28), (0.5, 0.72)),
    "below": ((0.5, 0.72), (0.5, 0.28)),
}


def _scene(background: str, *objects: tuple[str, str], relation: str | None = None) -> ShapeScene:
    if len(objects) == 1:
        return ShapeScene(background, (Shape(*objects[0], 0.5, 0.5, 0.4),))
    places = _PLACES[relation]
    shapes = tuple(Shape(c, s, x, y, 0.3) for (c, s), (x, y) in zip(objects, places, strict=True))
    return ShapeScene(background, shapes, relation)


BENCHMARK: dict[str, list[ShapeScene]] = {
    "colours": [
        _scene("blue", ("red", "circle")),
        _scene("white", ("green", "square")),
        _scene("black", ("yellow", "circle")),
        _scene("yellow", ("purple", "square")),
        _scene("red", ("white", "triangle")),
        _scene("green", ("blue", "triangle")),
    ],
    "counts": [
        _scene("blue", ("red", "circle"), ("red", "circle")),
        _scene("black", ("white", "square"), ("white", "square")),
        _scene("white", ("purple", "triangle"), ("purple", "triangle")),
        _scene("red", ("yellow", "square"), ("yellow", "square")),
    ],
    "relations": [
        _scene("white", ("red", "circle"), ("blue", "triangle"), relation="above"),
        _scene("black", ("green", "square"), ("yellow", "circle"), relation="below"),
        _scene("yellow", ("purple", "triangle"), ("white", "square"), relation="left of"),
        _scene("blue", ("white", "circle"), ("red", "square"), relation="right of"),
    ],
    "held-out pairs": [
        _scene("white", ("red", "triangle")),
        _scene("black", ("green", "circle")),
        _scene("white", ("blue", "square")),
        _scene("blue", ("yellow", "triangle")),
        _scene("green", ("purple", "circle")),
    ],
}


@torch.inference_mode()
def run_benchmark(
    pipe,
    clip_model: torch.nn.Module,
    samples_per_prompt: int = 8,
    guidance_scale: float = 3.0,
    num_inference_steps: int = 20,
    seed: int = 0,
    tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
) -> list[dict]:
    """One row per category: "category", "prompts", "reader" (mean share of the caption's checks the
    pictures pass), "all right" (share of pictures passing all of them), "clip_score"."""
    tokenizer = tokenizer or CLIPTokenizer()
    size = clip_model.vision_model.embeddings.image_size
    rows = []
    for category, scenes in BENCHMARK.items():
        prompts = [s.caption for s in scenes for _ in range(samples_per_prompt)]
        images = pipe(
            prompts, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed), output_type="pt", progress=False,
        ).images.float()  # [N, 3, H, W] in [0, 1]  # fmt: skip
        pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        drawn = [s for s in scenes for _ in range(samples_per_prompt)]
        checks = [score_image(p, s) for p, s in zip(pixels, drawn, strict=True)]
        rows.append(
            {
                "category": category,
                "prompts": len(scenes),
                "reader": float(np.mean([np.mean(list(c.values())) for c in checks])),
                "all right": float(np.mean([all(c.values()) for c in checks])),
                "clip_score": clip_score(
                    images, prompts, clip_model, tokenizer, lambda x: clip_preprocess(x, size)
                ),
            }
        )
    return rows


def format_benchmark(rows: list[dict]) -> str:
    """The benchmark's rows as a text table."""
    lines = [f"{'category':15s} prompts  reader  all right  CLIP score"]
    for r in rows:
        reader, right = f"{r['reader']:6.0%}", f"{r['all right']:9.0%}"
        lines.append(f"{r['category']:15s} {r['prompts']:7d}  {reader}  {right}  {r['clip_score']:10.2f}")
    return "\n".join(lines)
