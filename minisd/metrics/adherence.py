"""Prompt adherence and diversity of a shapes model against guidance scale (chapter 07).

Text-to-image models are measured with FID (image quality and diversity) and CLIP score (does the
picture match the prompt), and raising the guidance scale trades one for the other. Here the same
trade-off in miniature: on captions whose colour-shape pair was held out of training, `score_image`
reads the whole caption back from each generated picture (both objects, the count, the relation
word), and the mean distance between pictures of the same prompt measures diversity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from minisd.models.attention_maps import cross_attention_maps, word_tokens
from minisd.shapes import (
    RELATIONS,
    ShapeScene,
    ShapesDataset,
    render_scene,
    reversed_relation,
    scene_kind,
    score_image,
    shape_coverage,
)

KINDS = ("single", "two alike", "relation")


def _pixels(images: np.ndarray) -> np.ndarray:
    """Float pictures [N, H, W, 3] in [0, 1] -> uint8, as the reader takes them."""
    return (np.asarray(images) * 255).round().astype(np.uint8)


def adherence(images: np.ndarray, scenes: Sequence[ShapeScene]) -> dict[str, float]:
    """How often pictures float [N, H, W, 3] in [0, 1] show their scenes, read back by `score_image`.

    "color", "shape", "background", "count": over all scenes (the first object named); "second":
    over two-object scenes; "relation": over relation scenes; "all: <kind>": the whole caption right,
    per kind of caption; "relation: <word>": per relation word. NaN where no scene qualifies.
    """
    scores = [score_image(img, scene) for img, scene in zip(_pixels(images), scenes, strict=True)]
    kinds = [scene_kind(s) for s in scenes]

    def rate(values: list[bool]) -> float:
        return float(np.mean(values)) if values else float("nan")

    rates = {
        k: rate([s[k] for s in scores if k in s])
        for k in (*"color shape background count".split(), "second", "relation")
    }
    for kind in KINDS:
        rates[f"all: {kind}"] = rate(
            [all(s.values()) for s, k in zip(scores, kinds, strict=True) if k == kind]
        )
    for word in RELATIONS:
        rates[f"relation: {word}"] = rate(
            [s["relation"] for s, scene in zip(scores, scenes, strict=True) if scene.relation == word]
        )
    return rates


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
    rows = []
    for scale in tqdm(guidance_scales, desc="guidance scales", disable=not progress):
        images = pipe(
            prompts,
            num_inference_steps=num_inference_steps,
            guidance_scale=scale,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
            progress=False,
        ).images  # [N, H, W, 3] in [0, 1], the model's own size
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


@torch.inference_mode()
def relation_control(
    pipe,
    num_scenes: int = 48,
    guidance_scale: float = 3.0,
    num_inference_steps: int = 25,
    seed: int = 0,
) -> dict[str, float]:
    """Does the relation word move the objects? Held-out relation captions and their reversed twins.

    Each caption ("a red circle above a blue square on ...") and its twin with the opposite word
    ("... below ...") are drawn from the same seed. Returns "relation" (the caption's picture shows
    its relation), "reversed" (the twin's picture shows the reversed relation), "both", and "changed"
    (the mean |difference| between the two pictures, in [0, 1]: near 0 means the word was ignored).
    """
    data = ShapesDataset(20 * num_scenes, seed=seed, split="heldout")
    scenes = [s for s in map(data.scene, range(len(data))) if s.relation is not None][:num_scenes]
    twins = [reversed_relation(s) for s in scenes]

    def draw(batch: list[ShapeScene]) -> np.ndarray:
        return pipe(
            [s.caption for s in batch],
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=[torch.Generator().manual_seed(seed + i) for i in range(len(batch))],
            output_type="np",
            progress=False,
        ).images  # [N, H, W, 3] in [0, 1]

    images, twin_images = draw(scenes), draw(twins)
    right = [score_image(img, s)["relation"] for img, s in zip(_pixels(images), scenes, strict=True)]
    flipped = [score_image(img, s)["relation"] for img, s in zip(_pixels(twin_images), twins, strict=True)]
    return {
        "relation": float(np.mean(right)),
        "reversed": float(np.mean(flipped)),
        "both": float(np.mean(np.logical_and(right, flipped))),
        "changed": float(np.abs(images - twin_images).mean()),
    }


@torch.inference_mode()
def attention_binding(
    pipe,
    num_scenes: int = 48,
    timesteps: Sequence[int] = (200, 400, 600),
    seed: int = 0,
) -> dict[str, float]:
    """Does each object word read its own object? Cross-attention on drawn two-object scenes.

    Each held-out scene "a {colour} {shape} {relation} a {colour} {shape} on ..." is drawn, encoded
    and noised to each timestep; `cross_attention_maps` gives the attention every latent cell pays
    each token. For the four colour and shape words, compare the mean attention on the cells only
    the word's own object covers with that on the other object's. Returns `binding` (how often it is
    higher on its own object: 0.5 is chance), `contrast` (the geometric mean of own / other) and
    `word_share` (the attention paid to the caption's words, not to the start, end or padding).
    """
    data = ShapesDataset(20 * num_scenes, seed=seed, split="heldout")
    scenes = [s for s in map(data.scene, range(len(data))) if s.relation is not None][:num_scenes]
    images = torch.stack([torch.from_numpy(render_scene(s)) for s in scenes]).permute(0, 3, 1, 2)
    images = images.to(pipe.device, pipe.dtype) / 127.5 - 1  # [N, 3, H, W] in [-1, 1]
    latents = pipe.vae.encode(images).latent_dist.mean * pipe.vae.config.scaling_factor  # [N, 4, h, w]
    side = latents.shape[-1]
    ids = pipe.tokenizer([s.caption for s in scenes]).to(pipe.device)
    mask = pipe.tokenizer.attention_mask(ids) if pipe.mask_text_padding else None
    context = pipe.text_encoder(ids)[0]  # [N, 77, D]
    positions, regions = [], []  # per scene: each word's token; the cells only one object covers
    for scene in scenes:
        positions.append(word_tokens(pipe.tokenizer, scene.caption))
        first, second = (shape_coverage(s, side) > 0.5 for s in scene.shapes)
        regions.append([torch.from_numpy(first & ~second), torch.from_numpy(second & ~first)])
    wins, ratios, shares = [], [], []
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed + t)).to(latents)
        t = torch.tensor([t], device=pipe.device)
        noisy = pipe.scheduler.add_noise(latents, noise, t)
        maps = cross_attention_maps(pipe.unet, noisy, t, context, side, mask).float().cpu()  # [N, h, w, 77]
        for scene, attention, tokens, only in zip(scenes, maps, positions, regions, strict=True):
            for word, (k,) in scene.object_words():
                a = attention[..., tokens[word]]  # [h, w]
                own, other = a[only[k]].mean(), a[only[1 - k]].mean()
                wins.append(float(own > other))
                ratios.append(float(own / other))
            shares.append(float(attention[..., 1 : tokens[-1] + 1].sum(-1).mean()))
    return {
        "binding": float(np.mean(wins)),
        "contrast": float(np.exp(np.mean(np.log(ratios)))),
        "word_share": float(np.mean(shares)),
    }


def format_rows(rows: list[dict]) -> str:
    """The evaluation as small text tables: one row per guidance scale, then the kinds of caption."""
    lines = ["guidance  colour  shape  background  count  second  relation  diversity"]
    for r in rows:
        lines.append(
            f"{r['guidance_scale']:8.1f}  {r['color']:6.1%}  {r['shape']:5.1%}  {r['background']:10.1%}"
            f"  {r['count']:5.1%}  {r['second']:6.1%}  {r['relation']:8.1%}  {r['diversity']:9.3f}"
        )
    kinds = [k for k in rows[0] if k.startswith(("all: ", "relation: "))]
    lines += ["", "guidance  " + "  ".join(f"{k:>17}" for k in kinds)]
    for r in rows:
        lines.append(f"{r['guidance_scale']:8.1f}  " + "  ".join(f"{r[k]:17.1%}" for k in kinds))
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
