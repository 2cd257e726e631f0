"""Prompt adherence and diversity of a shapes model against guidance scale (chapter 07).

The seeds measure text-to-image models with FID (image quality and diversity) and CLIP score (does
the picture match the prompt), and show that raising the guidance scale trades one for the other.
Here the same trade-off in miniature: on captions whose colour-shape pair was held out of training,
`read_scene` reads colour and shape back from each generated picture, and the mean distance
between pictures of the same prompt measures diversity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from minisd.data.shapes import ShapeScene, ShapesDataset, score_image


def adherence(images: np.ndarray, scenes: Sequence[ShapeScene]) -> dict[str, float]:
    """How often pictures float [N, H, W, 3] in [0, 1] show their scenes: the fraction of correct
    colour, shape, background and object count, read back by `score_image`."""
    pixels = (np.asarray(images) * 255).round().astype(np.uint8)
    scores = [score_image(img, scene) for img, scene in zip(pixels, scenes, strict=True)]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("color", "shape", "background", "count")}


@torch.inference_mode()
def evaluate_adherence(
    pipe,
    guidance_scales: Sequence[float] = (1.0, 2.0, 3.0, 5.0, 7.5),
    num_prompts: int = 48,
    samples_per_prompt: int = 4,
    num_inference_steps: int = 25,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """One row per guidance scale: colour/shape/background accuracy on held-out captions, and diversity.

    Diversity is the mean absolute difference (in [0, 1]) between two pictures of the same prompt
    drawn from different seeds: 0 means every seed gives the same picture.
    """
    heldout = ShapesDataset(num_prompts, seed=seed, split="heldout")
    scenes = [heldout.scene(i) for i in range(num_prompts) for _ in range(samples_per_prompt)]
    prompts = [s.caption for s in scenes]
    size = pipe.unet.config["sample_size"] * pipe.vae_scale_factor
    rows = []
    for scale in tqdm(guidance_scales, desc="guidance scales", disable=not progress):
        images = pipe(
            prompts,
            num_inference_steps=num_inference_steps,
            guidance_scale=scale,
            height=size,
            width=size,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
            progress=False,
        )  # [N, H, W, 3] in [0, 1]
        rates = adherence(images, scenes)
        groups = images.reshape(num_prompts, samples_per_prompt, -1)
        pairs = np.abs(groups[:, :, None] - groups[:, None]).mean(-1)  # [P, S, S]
        diversity = pairs.sum((1, 2)) / (samples_per_prompt * (samples_per_prompt - 1))
        rows.append(
            {
                "guidance_scale": float(scale),
                **rates,
                "diversity": float(diversity.mean()),
            }
        )
    return rows


def format_rows(rows: list[dict]) -> str:
    """The evaluation as a small text table."""
    lines = ["guidance  colour  shape  background  diversity"]
    for r in rows:
        lines.append(
            f"{r['guidance_scale']:8.1f}  {r['color']:6.1%}  {r['shape']:5.1%}  {r['background']:10.1%}"
            f"  {r['diversity']:9.3f}"
        )
    return "\n".join(lines)


def plot_rows(rows: list[dict]):
    """Adherence (colour, shape, background) and diversity against the guidance scale, as a figure."""
    import matplotlib.pyplot as plt

    scales = [r["guidance_scale"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, label in [("color", "colour"), ("shape", "shape"), ("background", "background")]:
        left.plot(scales, [r[key] for r in rows], "o-", label=label)
    left.set(xlabel="guidance scale", ylabel="accuracy on held-out captions", ylim=(0, 1.02))
    left.legend()
    right.plot(scales, [r["diversity"] for r in rows], "o-", color="C3")
    right.set(xlabel="guidance scale", ylabel="diversity (mean |difference|)")
    fig.suptitle("adherence rises with guidance, diversity falls")
    fig.tight_layout()
    return fig
