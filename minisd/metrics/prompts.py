"""Measuring what the prompt tools of chapter 08 do to the tiny shapes model, with the shapes reader."""

from __future__ import annotations

import random

import numpy as np
import torch

from minisd.shapes import PALETTE, ShapeScene, novel_scene, random_scene, score_image

FILLER = "a picture, "  # 3 tokens the model reads as nothing in particular


def _sample(pipe, prompts: list[str], seed: int, steps: int, **kwargs) -> np.ndarray:
    images = pipe(
        prompts, num_inference_steps=steps, guidance_scale=3.0, scheduler="ddim", output_type="np",
        generator=torch.Generator().manual_seed(seed), progress=False, **kwargs,
    ).images  # fmt: skip
    return (images * 255).round().astype(np.uint8)  # [B, 32, 32, 3]


def color_coverage(images: np.ndarray, color: str) -> float:
    """Share of all pixels whose nearest palette colour is `color` (uint8 images [B, H, W, 3])."""
    names = list(PALETTE)
    rgb = np.array([PALETTE[n] for n in names], dtype=np.float32)
    d = ((images[..., None, :].astype(np.float32) - rgb) ** 2).sum(-1)  # [B, H, W, colours]
    return float((d.argmin(-1) == names.index(color)).mean())


def _adherence(images: np.ndarray, scenes: list[ShapeScene]) -> float:
    """Mean over pictures of the share of the caption's checks the picture passes."""
    scores = [score_image(i, s) for i, s in zip(images, scenes, strict=True)]
    return float(np.mean([np.mean(list(s.values())) for s in scores]))


def caption_adherence(
    pipe,
    template: str = "{}",
    long_prompt: bool = False,
    num_scenes: int = 32,
    seed: int = 0,
    steps: int = 25,
) -> float:
    """Adherence of random scenes drawn from their captions put into `template` (e.g. "BREAK {}")."""
    rng = random.Random(seed)
    scenes = [random_scene(rng) for _ in range(num_scenes)]
    prompts = [template.format(s.caption) for s in scenes]
    return _adherence(_sample(pipe, prompts, seed, steps, long_prompt=long_prompt), scenes)


def filler_adherence(
    pipe, num_scenes: int = 32, filler_tokens: int = 90, seed: int = 0, steps: int = 25
) -> dict:
    """Captions put after `filler_tokens` tokens of filler: adherence of the plain caption, of the
    padded caption truncated to 77 tokens (the caption is cut off), and of it read as a long prompt."""
    padded = FILLER * (filler_tokens // 3) + "{}"
    args = dict(num_scenes=num_scenes, seed=seed, steps=steps)
    return {
        "plain": caption_adherence(pipe, "{}", **args),
        "truncated": caption_adherence(pipe, padded, **args),
        "long_prompt": caption_adherence(pipe, padded, long_prompt=True, **args),
    }


def weight_sweep(
    pipe, weights: list[float], color: str = "red", num_scenes: int = 16, seed: int = 0, steps: int = 25
) -> list[dict]:
    """For each weight w, "a (<color>:w) <shape> on a <background> background": the share of the
    picture in `color` -> [{"weight", "coverage"}]."""
    rng = random.Random(seed)
    shapes = [rng.choice(["circle", "square", "triangle"]) for _ in range(num_scenes)]
    backs = [rng.choice([c for c in ("blue", "green", "yellow") if c != color]) for _ in range(num_scenes)]
    rows = []
    for w in weights:
        prompts = [f"a ({color}:{w}) {s} on a {b} background" for s, b in zip(shapes, backs, strict=True)]
        images = _sample(pipe, prompts, seed, steps, long_prompt=True)
        rows.append({"weight": w, "coverage": color_coverage(images, color)})
    return rows


def novel_color_adherence(
    pipe, word: str, color: str = "cyan", num_scenes: int = 32, seed: int = 0, steps: int = 25
) -> dict:
    """One-object scenes in `color` captioned with `word` in place of the colour's name: how often an
    object of that colour is drawn ("color"), its shape right ("shape"), and the colour's share of
    the pictures ("coverage")."""
    rng = random.Random(seed + 1)
    scenes = [novel_scene(rng, color) for _ in range(num_scenes)]
    images = _sample(pipe, [s.caption.replace(f"a {color} ", f"a {word} ", 1) for s in scenes], seed, steps)
    scores = [score_image(i, s) for i, s in zip(images, scenes, strict=True)]
    return {
        "color": float(np.mean([s["color"] for s in scores])),
        "shape": float(np.mean([s["shape"] for s in scores])),
        "coverage": color_coverage(images, color),
    }
